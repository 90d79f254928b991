"""Feature extractors for the distribution metrics: the protocol they share and the domain-classifier one.

An extractor maps uint8 images (B, 3, H, W) to features (B, D) for FID / precision-recall and logits (B, K) for
the Inception Score (and, for the domain classifier, class accuracy). ``feature_space`` names the space in
reports; ``weights_sha256`` identifies the weights when the name does not (cached statistics are matched by it).
``metrics.inception.InceptionExtractor`` is the other implementation.

Glossary: ``B`` batch, ``H W`` image size, ``D`` feature size, ``K`` classes.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from ..checkpoint import WEIGHTS_NAME
from ..models.classifier import load_classifier


class FeatureExtractor(Protocol):
    feature_space: str
    weights_sha256: str | None

    def features_and_logits(self, x_uint8_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class DomainExtractor:
    """A classifier from ``imagefolder train-classifier``: pooled penultimate features and class logits.

    Images are mapped to [-1, 1] and, when their size differs from the classifier's, resized to it (bilinear,
    antialiased).
    """

    def __init__(self, classifier_dir: str | Path, device: str | torch.device = "cpu"):
        model, self.class_names = load_classifier(classifier_dir)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.image_size = model.config.image_size
        self.feature_space = f"domain:{classifier_dir}"
        self.weights_sha256 = hashlib.sha256((Path(classifier_dir) / WEIGHTS_NAME).read_bytes()).hexdigest()

    @torch.no_grad()
    def features_and_logits(self, x_uint8_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x_uint8_B3HW.to(self.device).float().div(127.5).sub(1.0)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        feat_BD = self.model.features(x)
        return feat_BD.float(), self.model.head(feat_BD).float()
