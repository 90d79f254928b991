"""Inception-v3 features for FID / IS / precision-recall, through torch-fidelity's ``FeatureExtractorInceptionV3``.

That network is the TensorFlow FID Inception (2015-12-05 weights) ported to PyTorch, including TF1's bilinear
resize to 299 px, so its 2048-d pool features match the reference FID implementations; its ``logits_unbiased``
(1008 classes, no bias) are what torch-fidelity computes the Inception Score from.

Weights come from torch-fidelity's usual download (cached by ``torch.hub``) or from a local ``.pth`` file. A local
file is first read with ``torch.load(weights_only=True)``, so a file holding anything but tensors is refused
before torch-fidelity unpickles it.

Glossary: ``B`` batch, ``H W`` image size (any), ``D`` = 2048 features, ``K`` = 1008 classes.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .fid import INCEPTION_SPACE

FEATURES, LOGITS = "2048", "logits_unbiased"


class InceptionUnavailable(RuntimeError):
    """The Inception weights could not be downloaded or read; the message says how to give them."""


class InceptionExtractor:
    """``features_and_logits(x_uint8_B3HW) -> (feat_BD float32, logits_BK float32)`` on any image size."""

    feature_space = INCEPTION_SPACE
    weights_sha256 = None  # the name identifies the space: every copy of these weights is the same network

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu"):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        if weights is not None:
            _check_plain_state_dict(Path(weights))
        try:
            net = FeatureExtractorInceptionV3(INCEPTION_SPACE, [FEATURES, LOGITS],
                                              feature_extractor_weights_path=None if weights is None else str(weights),
                                              verbose=False)
        except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; bad state dicts RuntimeErrors
            where = f"from {weights}" if weights is not None else "(torch-fidelity download)"
            hint = ("" if weights is not None else
                    "; download weights-inception-2015-12-05-6726825d.pth from the torch-fidelity v0.2.0 release "
                    "on a connected machine and pass it with --inception-weights PATH")
            raise InceptionUnavailable(f"cannot load the Inception weights {where}: {_first_line(e)}{hint}") from None
        self.net = net.to(device)
        self.device = torch.device(device)
        self.source = str(weights) if weights is not None else "torch-fidelity download"

    @torch.no_grad()
    def features_and_logits(self, x_uint8_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat_BD, logits_BK = self.net(x_uint8_B3HW.to(self.device))
        return feat_BD, logits_BK


def _check_plain_state_dict(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"--inception-weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for foreign files
        raise InceptionUnavailable(f"--inception-weights {path}: not a plain PyTorch state dict "
                                   f"({_first_line(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InceptionUnavailable(f"--inception-weights {path}: not a state dict of tensors")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
