"""Class accuracy of a classifier's predictions: the judge on samples and reconstructions (demo, ``evaluate``), the
classifier trainer's validation.

Glossary: ``N`` images, ``K`` classes.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def class_accuracy(logits_NK: torch.Tensor, labels_N: np.ndarray | torch.Tensor) -> float:
    """The fraction of images whose most likely class is their label (NaN for no images)."""
    if len(labels_N) == 0:
        return math.nan
    return (logits_NK.argmax(dim=1).cpu() == torch.as_tensor(labels_N).cpu()).double().mean().item()


def accuracy_stderr(acc: float, n: int) -> float:
    """Binomial standard error of an accuracy over ``n`` images."""
    return math.sqrt(acc * (1 - acc) / n)
