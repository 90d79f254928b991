"""Class accuracy of a classifier's predictions: the judge on samples and reconstructions (demo, ``evaluate``), the
classifier trainer's validation.

Glossary: ``N`` images, ``K`` classes.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def correct_predictions(logits_NK: torch.Tensor, labels_N: np.ndarray | torch.Tensor) -> int:
    """How many images' most likely class is their label."""
    return int((logits_NK.detach().argmax(dim=1).cpu() == torch.as_tensor(labels_N).cpu()).sum())


def class_accuracy(logits_NK: torch.Tensor, labels_N: np.ndarray | torch.Tensor) -> float:
    """The fraction of images whose most likely class is their label (NaN for no images)."""
    return correct_predictions(logits_NK, labels_N) / len(labels_N) if len(labels_N) else math.nan


def accuracy_stderr(acc: float, n: int) -> float:
    """Binomial standard error of an accuracy over ``n`` images."""
    return math.sqrt(acc * (1 - acc) / n)
