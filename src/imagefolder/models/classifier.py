"""A small CNN classifier for "domain" metrics on datasets Inception does not suit (tiny images, no weights).

Trained on the dataset itself (``imagefolder train-classifier``), it gives the class accuracy of generated samples
(does conditioning work?), a feature space for FID / precision-recall (the pooled penultimate features) and an
Inception-Score-like number from its softmax.

Architecture: a 3x3 conv-BN-GELU stem of ``width / 2`` channels at full resolution, then ``depth`` stages of two
3x3 conv-BN-GELU layers, the first with stride 2; stage ``s`` has ``width * 2**s`` channels. Global average pooling
gives the feature vector (``width * 2**(depth - 1)`` values), a linear head the logits. Inputs are RGB in [-1, 1]
of ``image_size`` px. (Downsampling by strided convolutions keeps full-resolution work to the stem: a training
step is about 4x faster on a CPU than with the first stage at full resolution.)

Saved in our checkpoint format (``checkpoint.py``) with kind ``"classifier"``; ``config.json`` also stores the
class names in label order.

Glossary: ``B`` batch, ``C`` channels, ``H W`` image size, ``D`` feature size, ``K`` classes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..checkpoint import config_from, load_state_strict, read_config, read_weights, save_model
from ..config import ConfigError
from ..errors import CheckpointError

KIND = "classifier"


@dataclass
class ClassifierConfig:
    image_size: int = 32     # input side in pixels (other sizes are resized to it by the metrics)
    num_classes: int = 10    # K
    width: int = 32          # channels of the first stage
    depth: int = 3           # stages; features have width * 2**(depth - 1) values

    def __post_init__(self) -> None:
        for name, low in (("image_size", 8), ("num_classes", 2), ("width", 1), ("depth", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"ClassifierConfig.{name} must be at least {low}, got {getattr(self, name)}")
        if self.image_size < 2 ** self.depth:
            raise ConfigError(f"ClassifierConfig: image_size {self.image_size} is too small for depth {self.depth}")

    @property
    def feature_dim(self) -> int:
        return self.width * 2 ** (self.depth - 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassifierConfig":
        from ..config import _from_dict
        return _from_dict(cls, d)


CLASSIFIER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(width=32, depth=3),    # 128-d features; ~0.3 M parameters
    "small": dict(width=64, depth=3),   # 256-d features; ~1.1 M parameters
}


def classifier_preset(name: str, **overrides: Any) -> ClassifierConfig:
    """A named classifier configuration with fields overridden (``image_size``, ``num_classes``, ...)."""
    if name not in CLASSIFIER_PRESETS:
        raise ConfigError(f"unknown classifier preset {name!r}; choose one of {sorted(CLASSIFIER_PRESETS)}")
    return ClassifierConfig(**{**CLASSIFIER_PRESETS[name], **overrides})


def _conv_bn_gelu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.GELU())


class DomainClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        c = max(1, config.width // 2)
        layers: list[nn.Module] = [_conv_bn_gelu(3, c)]
        for stage in range(config.depth):
            c_out = config.width * 2 ** stage
            layers += [_conv_bn_gelu(c, c_out, stride=2), _conv_bn_gelu(c_out, c_out)]
            c = c_out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (B, D) of images in [-1, 1]."""
        return self.body(x_B3HW).mean(dim=(2, 3))

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Class logits (B, K)."""
        return self.head(self.features(x_B3HW))


def save_classifier(model: DomainClassifier, class_names: Sequence[str], out_dir: str | Path,
                    info: dict[str, Any] | None = None) -> Path:
    """Write the classifier, its class names (label order) and optional training ``info`` to ``out_dir``."""
    if len(class_names) != model.config.num_classes:
        raise ValueError(f"{len(class_names)} class names for a classifier of {model.config.num_classes} classes")
    extra = {"class_names": list(class_names), **({"info": info} if info else {})}
    return save_model(model, KIND, model.config, out_dir, extra=extra)


def _classifier_meta(path: str | Path) -> tuple[Path, dict]:
    from ..hub import resolve
    path = Path(resolve(path))
    if not path.exists():
        raise FileNotFoundError(f"no such classifier: {path}")
    meta = read_config(path)
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{path}: a {meta.get('kind')!r} checkpoint, not a classifier "
                              "(make one with 'imagefolder train-classifier')")
    return path, meta


def read_classifier_config(path: str | Path) -> ClassifierConfig:
    """The configuration of the classifier in ``path`` (its config.json only; see ``load_classifier``)."""
    path, meta = _classifier_meta(path)
    return config_from(ClassifierConfig, meta, path)


def load_classifier(path: str | Path) -> tuple[DomainClassifier, list[str]]:
    """The classifier in ``path`` (a folder, or a folder on the hub: ``hf://OWNER/REPO[/SUBFOLDER]``; in eval mode,
    on the CPU) and its class names."""
    path, meta = _classifier_meta(path)
    config = config_from(ClassifierConfig, meta, path)
    class_names = [str(c) for c in meta.get("class_names", [])]
    if len(class_names) != config.num_classes:
        raise CheckpointError(f"{path}: {len(class_names)} class names for {config.num_classes} classes")
    model = DomainClassifier(config)
    load_state_strict(model, read_weights(path), where=str(path))
    return model.eval(), class_names
