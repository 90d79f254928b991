"""Training the small domain classifier (``models/classifier.py``) on an ImageFolder dataset.

The classifier is the judge of the domain metrics (class accuracy of samples, FID in its feature space) and can be
the tokenizer's frozen semantic teacher (``semantic_guide: classifier``). It trains on DATA/train (DATA itself
when it has no train/ folder) with random horizontal flips, AdamW and a cosine learning-rate schedule after a
short warmup, and is scored on DATA/val (same class names) after every epoch. With ``time_budget_minutes`` the run
also stops when the budget is spent, and the schedule follows the elapsed share of the budget (so it still decays
to its end). Unreadable image files are skipped and listed in the summary. The checkpoint (config.json with the
class names and a training summary, model.safetensors) is written to OUT at the end, each file atomically.

Glossary: ``B`` batch, ``K`` classes.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.folder import ImageFolderDataset, collate_skip_bad, split_dir
from ..data.images import ImageError, printable
from ..distributed import pick_device
from ..models.classifier import DomainClassifier, classifier_preset, save_classifier

WARMUP_FRACTION = 0.05   # of all steps, linear from 0 (at most WARMUP_MAX steps)
WARMUP_MAX = 200
EVAL_BATCH = 256


def lr_factor(step: int, total: int) -> float:
    """Linear warmup, then cosine decay to 0 at ``total`` steps."""
    warmup = max(1, min(WARMUP_MAX, round(WARMUP_FRACTION * total)))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def datasets(data: str | Path, image_size: int, seed: int) -> tuple[ImageFolderDataset, ImageFolderDataset | None]:
    """The training set (with flips) and the validation set (DATA/val, or None when there is none)."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: no such folder")
    train = ImageFolderDataset(split_dir(data, "train"), image_size, flip=True, seed=seed)
    if len(train.classes) < 2:
        raise ImageError(f"{split_dir(data, 'train')}: one class folder ({train.classes[0]}); a classifier needs two "
                         "or more")
    val = ImageFolderDataset(data / "val", image_size, classes=train.classes) if (data / "val").is_dir() else None
    return train, val


@torch.no_grad()
def accuracy(model: DomainClassifier, dataset: ImageFolderDataset, device: torch.device,
             workers: int = 0) -> tuple[float, int, list[str]]:
    """Top-1 accuracy over the readable images of ``dataset``, their count, and the unreadable files."""
    was_training = model.training
    model.eval()
    correct = seen = 0
    bad: list[str] = []
    loader = DataLoader(dataset, batch_size=EVAL_BATCH, num_workers=workers, collate_fn=collate_skip_bad)
    for batch in loader:
        bad += [b.path for b in batch.bad]
        if len(batch.labels):
            pred = model(batch.images.to(device)).argmax(dim=1).cpu()
            correct += int((pred == batch.labels).sum())
            seen += len(batch.labels)
    model.train(was_training)
    return (correct / seen if seen else float("nan")), seen, bad


def _check(epochs: int, batch_size: int, image_size: int, workers: int, lr: float,
           time_budget_minutes: float | None) -> None:
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("image_size", image_size, 8),
                             ("workers", workers, 0)):
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if time_budget_minutes is not None and not time_budget_minutes > 0:
        raise ValueError(f"time_budget_minutes must be positive, got {time_budget_minutes}")


def train_classifier(data: str | Path, out: str | Path, *, preset: str = "tiny", image_size: int = 32,
                     epochs: int = 6, batch_size: int = 32, lr: float = 2e-3, weight_decay: float = 0.05,
                     seed: int = 0, workers: int = 0, device: str | torch.device = "auto",
                     time_budget_minutes: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Train a ``preset`` classifier on ``data`` and write it to ``out``; returns a summary.

    Summary keys: ``out``, ``preset``, ``feature_dim``, ``num_classes``, ``image_size``, ``device``, ``epochs``
    (completed, the last one possibly cut by the budget), ``steps``, ``train_images``, ``train_accuracy`` (last
    epoch), ``val_images`` / ``val_accuracy`` (NaN / 0 without a val/ set), ``seconds``, ``stopped_by_budget``,
    ``history`` (per epoch: epoch, loss, train_accuracy, val_accuracy) and ``bad_files`` (unreadable files).
    Raises ``ValueError`` for impossible settings, ``FileNotFoundError`` / ``ImageError`` for unusable data and
    ``RuntimeError`` for an unavailable device.
    """
    _check(epochs, batch_size, image_size, workers, lr, time_budget_minutes)
    device = pick_device(device) if isinstance(device, str) else device
    torch.manual_seed(seed)
    train, val = datasets(data, image_size, seed)
    config = classifier_preset(preset, image_size=image_size, num_classes=len(train.classes))
    model = DomainClassifier(config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total = math.ceil(len(train) / batch_size) * epochs
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate_skip_bad,
                        generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0)
    budget_s = None if time_budget_minutes is None else 60 * time_budget_minutes
    bad: set[str] = set()
    history: list[dict[str, float]] = []
    val_acc, val_seen, step, stopped = float("nan"), 0, 0, False
    correct = seen = 0
    start = time.perf_counter()
    with tqdm(total=total, desc="train-classifier", unit="step", disable=None if progress else True) as bar:
        for epoch in range(epochs):
            train.set_epoch(epoch)
            correct = seen = 0
            loss_sum = 0.0
            for batch in loader:
                elapsed = time.perf_counter() - start
                if budget_s is not None and elapsed >= budget_s:
                    stopped = True
                    break
                bad.update(b.path for b in batch.bad)
                if len(batch.labels):
                    x, y = batch.images.to(device), batch.labels.to(device)
                    clock_step = step if budget_s is None else max(step, int(elapsed / budget_s * total))
                    for group in opt.param_groups:
                        group["lr"] = lr * lr_factor(clock_step, total)
                    logits = model(x)
                    loss = F.cross_entropy(logits, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += loss.item() * len(y)
                    correct += int((logits.argmax(dim=1) == y).sum())
                    seen += len(y)
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / max(1, seen):.3f}",
                                train_acc=f"{correct / max(1, seen):.3f}", refresh=False)
            if not seen and not stopped:  # a whole epoch without one readable image: more would not help
                raise ImageError(f"{printable(str(train.root))}: none of its {len(train)} images could be read "
                                 f"(e.g. {printable(sorted(bad)[0]) if bad else '?'}); fix or replace the files")
            if val is not None:
                val_acc, val_seen, val_bad = accuracy(model, val, device, workers)
                bad.update(val_bad)
                if not val_seen:
                    raise ImageError(f"{printable(str(val.root))}: none of its {len(val)} validation images could "
                                     f"be read (e.g. {printable(val_bad[0]) if val_bad else '?'}); fix or remove them")
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / max(1, seen):.3f}",
                                train_acc=f"{correct / max(1, seen):.3f}", val_acc=f"{val_acc:.3f}")
            if seen:
                history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                                "val_accuracy": val_acc})
            if stopped:
                break
    seconds = time.perf_counter() - start
    train_acc = correct / max(1, seen)
    info = {"data": str(data), "epochs": len(history), "steps": step, "train_images": len(train),
            "train_accuracy": round(train_acc, 6), "seed": seed, "seconds": round(seconds, 1)}
    if val is not None and val_seen:
        info.update(val_images=val_seen, val_accuracy=round(val_acc, 6))
    save_classifier(model.cpu().eval(), train.classes, out, info=info)
    return {"out": str(out), "preset": preset, "feature_dim": config.feature_dim, "num_classes": config.num_classes,
            "image_size": image_size, "device": str(device), "epochs": len(history), "steps": step,
            "train_images": len(train), "train_accuracy": train_acc, "val_images": val_seen, "val_accuracy": val_acc,
            "seconds": seconds, "stopped_by_budget": stopped, "history": history, "bad_files": sorted(bad)}
