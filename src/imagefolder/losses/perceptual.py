"""LPIPS perceptual loss (VGG16 trunk) from the ``lpips`` package, frozen, with explicit control of the trunk weights.

The LPIPS linear layers ship inside the ``lpips`` wheel. The VGG16 trunk needs torchvision's ImageNet weights,
which come from one of three places (``weights``):

* ``None``: torchvision's normal download (or its cache under ``$TORCH_HOME/hub/checkpoints``);
* a path: a local torchvision VGG16 state dict file (``features.<i>.weight`` / ``.bias`` keys; the classifier keys,
  if present, are ignored);
* ``"random"``: a randomly initialised trunk, for tests only (the values mean nothing perceptually).

Glossary: ``B`` batch, ``H W`` image height and width.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import lpips
import torch
import torch.nn as nn
from torchvision.models import VGG16_Weights

VGG16_URL = VGG16_Weights.IMAGENET1K_V1.url
_HOW_TO_FIX = (f"download {VGG16_URL} (torchvision's ImageNet VGG16 weights) and pass the file with "
               "--perceptual-weights PATH (config key perceptual_weights), or set the perceptual loss weight to 0")


def _read_vgg16_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"perceptual loss weight is non-zero but the VGG16 weights file {path} does not "
                                f"exist: {_HOW_TO_FIX}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise RuntimeError(f"{path} holds a {type(state).__name__}, not a torchvision VGG16 state dict: {_HOW_TO_FIX}")
    return state


def _download_vgg16() -> dict[str, torch.Tensor]:
    try:
        return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except (OSError, RuntimeError) as err:  # URLError and HTTPError are OSErrors
        raise RuntimeError(f"perceptual loss weight is non-zero but the VGG16 weights could not be downloaded "
                           f"({err}): {_HOW_TO_FIX}") from err


def _load_trunk(trunk: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy torchvision's ``features.<i>.*`` tensors into lpips' ``slice<k>.<i>.*`` parameters, all of them."""
    mapped, missing = {}, []
    for name, param in trunk.named_parameters():
        _, index, kind = name.split(".")            # slice<k>.<i>.<weight|bias>
        key = f"features.{index}.{kind}"
        if key not in state or tuple(state[key].shape) != tuple(param.shape):
            missing.append(f"{key} {tuple(param.shape)}")
        else:
            mapped[name] = state[key]
    if missing:
        raise RuntimeError(f"{source} is not a torchvision VGG16 state dict: missing or misshapen {missing}. "
                           f"{_HOW_TO_FIX}")
    trunk.load_state_dict(mapped, strict=True)


class PerceptualLoss(nn.Module):
    """Mean LPIPS(VGG) distance of two image batches in [-1, 1]. Frozen: gradients reach only the inputs."""

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        if weights == "random":
            state, source = None, ""
        elif weights is None:
            state, source = _download_vgg16(), f"the download of {VGG16_URL}"
        else:
            state, source = _read_vgg16_file(Path(weights)), str(weights)
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=` argument
            warnings.simplefilter("ignore", UserWarning)
            self.lpips = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
        if state is not None:
            _load_trunk(self.lpips.net, state, source)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Stays in eval mode (LPIPS has dropout before its linear layers)."""
        return super().train(False)

    def forward(self, x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
        """Scalar: LPIPS averaged over the batch."""
        return self.lpips(x_B3HW, y_B3HW).mean()
