"""A perceptual loss in the feature maps of a classifier trained on the dataset itself (``train-classifier``).

LPIPS needs ImageNet VGG16 weights; on a machine without them, or for a domain VGG does not suit (32 px shapes),
a small classifier trained on the same data gives the feature space instead. The distance is LPIPS' unweighted
form: at the output of the stem and of every stage, activations are unit-normalised over channels, and the squared
difference is summed over channels and averaged over positions; the stages' terms are summed. The classifier is
frozen and kept in eval mode (BatchNorm uses its running statistics), so gradients reach only the inputs.

``build_perceptual`` is the one factory: ``"lpips"`` (VGG16; ``weights`` = None for the download or a local file)
or ``"classifier:DIR"``.

Glossary: ``B`` batch, ``C`` channels, ``H W`` image or feature-map size.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .perceptual import PerceptualLoss

PREFIX = "classifier:"


class ClassifierPerceptualLoss(nn.Module):
    """Mean feature distance of two image batches in [-1, 1] in a frozen ``DomainClassifier``'s stage outputs."""

    def __init__(self, classifier_dir: str | Path):
        super().__init__()
        from ..models.classifier import load_classifier
        model, _ = load_classifier(classifier_dir)
        self.image_size = model.config.image_size
        self.body = model.body
        # taps: the stem, then the second (stride-1) layer of every stage
        self.taps = {0} | {2 * s + 2 for s in range(model.config.depth)}
        self.source = str(classifier_dir)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ClassifierPerceptualLoss:
        """Stays in eval mode (BatchNorm running statistics)."""
        return super().train(False)

    def _maps(self, x_B3HW: torch.Tensor) -> list[torch.Tensor]:
        if x_B3HW.shape[-1] != self.image_size or x_B3HW.shape[-2] != self.image_size:
            x_B3HW = F.interpolate(x_B3HW, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        maps, h = [], x_B3HW
        for i, layer in enumerate(self.body):
            h = layer(h)
            if i in self.taps:
                maps.append(h)
        return maps

    def forward(self, x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
        """Scalar: the distance summed over taps, averaged over the batch."""
        total = x_B3HW.new_zeros(())
        for fx_BCHW, fy_BCHW in zip(self._maps(x_B3HW), self._maps(y_B3HW)):
            nx = fx_BCHW / (fx_BCHW.norm(dim=1, keepdim=True) + 1e-10)
            ny = fy_BCHW / (fy_BCHW.norm(dim=1, keepdim=True) + 1e-10)
            total = total + (nx - ny).square().sum(dim=1).mean()
        return total


def parse_perceptual_net(net: str) -> str | None:
    """None for ``lpips``, the classifier folder for ``classifier:DIR``; ValueError for anything else."""
    if net == "lpips":
        return None
    if net.startswith(PREFIX) and net[len(PREFIX):]:
        return net[len(PREFIX):]
    raise ValueError(f"perceptual_net must be lpips or classifier:DIR (a train-classifier output), got {net!r}")


def build_perceptual(net: str, weights: str | Path | None = None) -> nn.Module:
    """The perceptual loss named by ``net``: ``lpips`` (VGG16 trunk from ``weights``) or ``classifier:DIR``."""
    folder = parse_perceptual_net(net)
    return PerceptualLoss(weights=weights) if folder is None else ClassifierPerceptualLoss(folder)
