"""Linear probing of the tokenizer's quantized features, one probe per branch (top-1 accuracy).

The feature of an image for branch p is that branch's quantized latent after the last scale (the cumulative f_hat,
``Tokenizer.encode_with_fhats(x)[1][p][-1]``, (B, Cb, h, w)), mean-pooled over the latent grid (``pool="mean"``: Cb
features) or flattened (``pool="flatten"``: Cb*h*w features). Features are standardised with the training set's
per-feature mean and std; a linear softmax classifier with an L2 penalty on its weights is fitted to the training
features by full-batch L-BFGS from zero weights (deterministic: there is nothing random to seed) and scored on the
validation features. In an ImageFolder tokenizer with ``semantic_guide="dinov2"`` and ``half_sem=True`` the last
branch is the semantically regularised one; the paper's claim is that it carries more class information than the
detail branch(es).

Glossary: ``B`` batch, ``N`` images, ``F`` features per image, ``M`` classes, ``Cb`` code size per branch,
``h = w`` latent grid side, ``P`` branches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..data.folder import Batch
from ..data.images import ImageError
from ..models.tokenizer import Tokenizer
from .classes import class_accuracy

POOLS = ("mean", "flatten")
ProbeData = tuple[torch.Tensor, torch.Tensor] | Iterable  # (images (N, 3, H, W) in [-1, 1], labels (N,)) or batches


@dataclass
class Features:
    per_branch: list[torch.Tensor]                     # P x (N, F) float32 on the CPU
    labels: torch.Tensor                               # (N,) int64
    skipped: list[str] = field(default_factory=list)   # "path: reason" for files the loader could not read


def semantic_branch(tokenizer: Tokenizer) -> str | None:
    """``branchP-1`` when one branch is semantically regularised, ``all`` when a mix of all branches is
    (``half_sem=False``), None without semantic guidance."""
    c = tokenizer.config
    if c.semantic_guide == "none":
        return None
    return f"branch{c.product_quant - 1}" if c.half_sem else "all"


def _batches(data: ProbeData, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """(images, labels, unreadable files) per batch from a tensor pair, ``collate_skip_bad`` batches or
    (images, labels, ...) tuples."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        images_N3HW, labels_N = data
        for start in range(0, images_N3HW.shape[0], batch_size):
            yield images_N3HW[start:start + batch_size], labels_N[start:start + batch_size], []
        return
    for batch in data:
        if isinstance(batch, Batch):
            yield batch.images, batch.labels, [f"{b.path}: {b.reason}" for b in batch.bad]
        else:
            yield batch[0], torch.as_tensor(batch[1]), []


def _count(data: ProbeData) -> int | None:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data[0].shape[0]
    dataset = getattr(data, "dataset", None)
    return len(dataset) if dataset is not None else None


def _pool(f_hat_BChw: torch.Tensor, pool: str) -> torch.Tensor:
    if pool == "mean":
        return f_hat_BChw.mean(dim=(2, 3))
    if pool == "flatten":
        return f_hat_BChw.flatten(1)
    raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")


@torch.no_grad()
def extract_features(tokenizer: Tokenizer, data: ProbeData, *, pool: str = "mean", batch_size: int = 64,
                     progress: bool = False, desc: str = "features") -> Features:
    """Per-branch features (``pool`` of the last-scale f_hat) of every image in ``data``, on the CPU. The tokenizer
    runs in eval mode on its own device (its mode is restored afterwards). Raises ``ImageError`` when no image of
    ``data`` could be read."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    device = next(tokenizer.parameters()).device
    per_branch: list[list[torch.Tensor]] = [[] for _ in range(tokenizer.num_branches)]
    labels, skipped = [], []
    was_training = tokenizer.training
    tokenizer.eval()
    try:
        with tqdm(total=_count(data), desc=desc, unit="img", disable=not progress) as bar:
            for x_B3HW, y_B, bad in _batches(data, batch_size):
                skipped += bad
                if y_B.numel():
                    _, fhats = tokenizer.encode_with_fhats(x_B3HW.to(device))
                    for p, fhats_p in enumerate(fhats):
                        per_branch[p].append(_pool(fhats_p[-1], pool).float().cpu())
                    labels.append(y_B.long().cpu())
                bar.update(y_B.numel() + len(bad))
    finally:
        tokenizer.train(was_training)
    if not labels:
        raise ImageError(f"no readable images to extract features from ({len(skipped)} unreadable)")
    return Features([torch.cat(f) for f in per_branch], torch.cat(labels), skipped)


def fit_linear_probe(x_NF: torch.Tensor, y_N: torch.Tensor, num_classes: int, *, max_iter: int = 100,
                     weight_decay: float = 1e-4) -> nn.Linear:
    """A linear classifier minimising cross-entropy + weight_decay / 2 * |W|^2 over (x, y), fitted by full-batch
    L-BFGS (strong Wolfe line search) from zero weights, on the features' device."""
    head = nn.Linear(x_NF.shape[1], num_classes).to(device=x_NF.device, dtype=torch.float32)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(x_NF), y_N) + 0.5 * weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return head.requires_grad_(False)


def _accuracy(head: nn.Linear, x_NF: torch.Tensor, y_N: torch.Tensor) -> float:
    return class_accuracy(head(x_NF), y_N)


def probe_features(train: Features, val: Features, num_classes: int, *, max_iter: int = 100,
                   weight_decay: float = 1e-4, device: torch.device | str = "cpu") -> dict[str, Any]:
    """One linear probe per branch: ``{"branch0": val top-1, ..., "train_accuracy": {"branch0": ..., ...}}``."""
    if len(train.per_branch) != len(val.per_branch):
        raise ValueError(f"train has {len(train.per_branch)} branches, val {len(val.per_branch)}")
    top = int(max(train.labels.max(), val.labels.max()))
    if top >= num_classes or min(train.labels.min(), val.labels.min()) < 0:
        raise ValueError(f"labels must be in [0, {num_classes}), got up to {top}")
    y_train, y_val = train.labels.to(device), val.labels.to(device)
    result: dict[str, Any] = {}
    train_acc = {}
    for p, (f_train_NF, f_val_NF) in enumerate(zip(train.per_branch, val.per_branch)):
        f_train_NF, f_val_NF = f_train_NF.to(device), f_val_NF.to(device)
        mean, std = f_train_NF.mean(dim=0), f_train_NF.std(dim=0).clamp_min(1e-6)  # constant features stay 0
        x_train, x_val = (f_train_NF - mean) / std, (f_val_NF - mean) / std
        head = fit_linear_probe(x_train, y_train, num_classes, max_iter=max_iter, weight_decay=weight_decay)
        result[f"branch{p}"] = _accuracy(head, x_val, y_val)
        train_acc[f"branch{p}"] = _accuracy(head, x_train, y_train)
    result["train_accuracy"] = train_acc
    return result


def probe_tokenizer(tokenizer: Tokenizer, train: ProbeData, val: ProbeData, *, num_classes: int | None = None,
                    pool: str = "mean", max_iter: int = 100, weight_decay: float = 1e-4, batch_size: int = 64,
                    progress: bool = False) -> dict[str, Any]:
    """Linear-probe top-1 accuracy of each branch's quantized features.

    ``train`` / ``val``: (images (N, 3, H, W) in [-1, 1] at the tokenizer's image size, labels (N,)), a DataLoader
    of ``collate_skip_bad`` batches, or any iterable of (images, labels, ...) batches. ``num_classes``: None = the
    largest label + 1. Returns ``{"branch0": acc, "branch1": acc, ..., "semantic": "branch1" | "all" | None,
    "train_accuracy": {...}, "num_train", "num_val", "num_classes", "feature_dims": {...}, "skipped": [...]}``;
    accuracies in [0, 1]. The probes run on the tokenizer's device.
    """
    feats = {split: extract_features(tokenizer, data, pool=pool, batch_size=batch_size, progress=progress,
                                     desc=f"features {split}")
             for split, data in (("train", train), ("val", val))}
    if num_classes is None:
        num_classes = int(max(f.labels.max() for f in feats.values())) + 1
    device = next(tokenizer.parameters()).device
    result = probe_features(feats["train"], feats["val"], num_classes, max_iter=max_iter,
                            weight_decay=weight_decay, device=device)
    result["semantic"] = semantic_branch(tokenizer)
    result.update(num_train=len(feats["train"].labels), num_val=len(feats["val"].labels), num_classes=num_classes,
                  feature_dims={f"branch{p}": f.shape[1] for p, f in enumerate(feats["train"].per_branch)},
                  skipped=feats["train"].skipped + feats["val"].skipped)
    return result
