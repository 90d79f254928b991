"""Training the small domain classifier (``models/classifier.py``) on an ImageFolder dataset: the third stage on
the shared engine (``engine.Trainer``).

The classifier is the judge of the domain metrics (class accuracy of samples, FID in its feature space) and can be
the tokenizer's frozen semantic teacher (``semantic_guide: classifier``). It trains on DATA/train (DATA itself
when it has no train/ folder) with random horizontal flips, AdamW and a cosine learning-rate schedule after a
short warm-up (5% of the steps, at most ``WARMUP_MAX``), and is scored on DATA/val (same class names) after every
epoch. With ``time_budget_minutes`` the run also stops when the budget is spent, and the schedule follows the
elapsed share of the budget (the engine's rule), so it still decays to its end. Unreadable image files are skipped
and listed in the summary.

OUT is the classifier itself (``config.json`` with the class names and a training summary, ``model.safetensors``,
each written atomically, after every epoch and at the end: what ``load_classifier`` and ``evaluate --classifier``
read), beside the run's files (``checkpoints/``, ``log.txt``, ``metrics.jsonl``).

Glossary: ``B`` batch, ``K`` classes.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data.folder import Batch, ImageFolderDataset, split_dir
from ..data.images import ImageError
from ..distributed import DistInfo, all_gather_object, pick_device
from ..metrics.classes import class_accuracy, correct_predictions
from ..models.classifier import ClassifierConfig, DomainClassifier, classifier_preset, save_classifier
from .engine import Schedule, Trainer
from .optim import adamw
from .options import ClassifierTrainOptions
from .validation import validation_batches

WARMUP_FRACTION = 0.05   # of all steps, linear from 0 (at most WARMUP_MAX steps)
WARMUP_MAX = 200


class ClassifierTrainer(Trainer):
    kind = "classifier"
    best_metric = ("accuracy", True)

    def __init__(self, opts: ClassifierTrainOptions, model_config: ClassifierConfig, out_dir, info: DistInfo, *,
                 train_set: ImageFolderDataset, val_set: ImageFolderDataset | None, **kw):
        super().__init__(opts, model_config, out_dir, info, **kw)
        self.train_set, self.val_set = train_set, val_set
        self.epochs_done: list[dict[str, float]] = []  # per epoch: epoch, loss, train_accuracy, val_accuracy
        self.val_images = 0
        self._epoch_sums = [-1, 0.0, 0, 0]             # epoch, loss sum, correct, seen

    @property
    def model_dir(self) -> Path:
        return self.out  # OUT is the classifier (what load_classifier reads), as before the engine

    def train_dataset(self) -> ImageFolderDataset:
        return self.train_set

    def build(self, schedule: Schedule) -> None:
        self.model = DomainClassifier(self.model_config).to(self.device).train()
        self.module = self.model
        if self.info.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            dev = self.device
            self.module = DDP(self.model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.params = list(self.model.parameters())
        self.opt = adamw([{"params": self.params, "weight_decay": self.opts.weight_decay}], self.opts.lr,
                         (self.opts.beta1, self.opts.beta2), self.device)

    def train_step(self, micro: list[Batch]) -> dict[str, float]:
        if self._epoch_sums[0] != self.epoch:
            self._epoch_sums = [self.epoch, 0.0, 0, 0]
        self.module.train()
        loss_sum = correct = seen = 0
        for i, batch in enumerate(micro):
            x, y = batch.images.to(self.device, non_blocking=True), batch.labels.to(self.device, non_blocking=True)
            with self.no_sync(self.module, i == len(micro) - 1), self.autocast():
                logits = self.module(x).float()
                loss = F.cross_entropy(logits, y)
                self.backward(loss / len(micro), "classifier")
            loss_sum += float(loss.detach()) * len(y)
            correct += correct_predictions(logits, y)
            seen += len(y)
        lr = self.lr_now(self.opts.lr)
        stepped, gnorm = self.optimizer_step("classifier", self.opt, self.params, lr)
        self.note_nonfinite(stepped, "classifier loss or gradients")
        sums = self._epoch_sums
        sums[1], sums[2], sums[3] = sums[1] + loss_sum, sums[2] + correct, sums[3] + seen
        return {"loss": loss_sum / seen, "acc": correct / seen, "lr": lr, "grad_norm": gnorm}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """The validation accuracy (all of DATA/val), and this epoch's entry of ``epochs_done``."""
        metrics: dict[str, float] = {}
        if self.val_set is not None:
            self.model.eval()
            logits, labels = [], []
            for x, y in validation_batches(self, self.val_set):
                logits.append(self.model(x.to(self.device)).float().cpu())
                labels.append(y)
            self.model.train()
            parts = all_gather_object((torch.cat(logits) if logits else torch.zeros(0, self.model_config.num_classes),
                                       torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)))
            logits_NK, labels_N = torch.cat([lg for lg, _ in parts]), torch.cat([lb for _, lb in parts])
            self.val_images = len(labels_N)
            metrics["accuracy"] = class_accuracy(logits_NK, labels_N)
        epoch, loss_sum, correct, seen = self._epoch_sums
        if seen:
            entry = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                     "val_accuracy": metrics.get("accuracy", math.nan)}
            if self.epochs_done and self.epochs_done[-1]["epoch"] == entry["epoch"]:
                self.epochs_done[-1] = entry
            else:
                self.epochs_done.append(entry)
        return metrics

    def summary_info(self) -> dict[str, Any]:
        """The training summary stored in config.json beside the class names."""
        last = self.epochs_done[-1] if self.epochs_done else {}
        info = {"data": self.opts.data_path, "epochs": len(self.epochs_done), "steps": self.step,
                "train_images": len(self.train_set), "train_accuracy": round(last.get("train_accuracy", math.nan), 6),
                "seed": self.opts.global_seed, "seconds": round(time.time() - self._t_start, 1)}
        if self.val_images:
            info.update(val_images=self.val_images, val_accuracy=round(last["val_accuracy"], 6))
        return info

    def export(self, out_dir: Path) -> None:
        plain = DomainClassifier(self.model_config)
        plain.load_state_dict({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, strict=True)
        save_classifier(plain.eval(), self.train_set.classes, out_dir, info=self.summary_info())

    def model_states(self) -> dict[str, Any]:
        return {"classifier": self.model.state_dict(), "opt": self.opt.state_dict(),
                "epochs_done": self.epochs_done, "epoch_sums": list(self._epoch_sums)}

    def load_model_states(self, states: dict[str, Any]) -> None:
        self.model.load_state_dict(states["classifier"], strict=True)
        self.opt.load_state_dict(states["opt"])
        self.epochs_done = list(states["epochs_done"])
        self._epoch_sums = list(states["epoch_sums"])


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
    epoch), ``val_images`` / ``val_accuracy`` (0 / NaN without a val/ set), ``seconds``, ``stopped_by_budget``,
    ``history`` (per epoch: epoch, loss, train_accuracy, val_accuracy) and ``bad_files`` (unreadable files).
    Raises ``ValueError`` for impossible settings, ``FileNotFoundError`` / ``ImageError`` for unusable data,
    ``TrainingError`` when no training image can be read, and ``RuntimeError`` for an unavailable device.
    """
    _check(epochs, batch_size, image_size, workers, lr, time_budget_minutes)
    device = pick_device(device) if isinstance(device, str) else device
    train, val = datasets(data, image_size, seed)
    config = classifier_preset(preset, image_size=image_size, num_classes=len(train.classes))
    batch_size = min(batch_size, len(train))  # a set smaller than a batch: one batch of all of it per epoch
    steps_per_epoch = len(train) // batch_size  # the engine drops the last partial batch of an epoch
    total = steps_per_epoch * epochs
    opts = ClassifierTrainOptions(
        data_path=str(data), model_preset=preset, epochs=epochs, global_batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        global_seed=seed, num_workers=workers, device=device.type, time_budget_minutes=time_budget_minutes,
        warmup_steps=max(1, min(WARMUP_MAX, round(WARMUP_FRACTION * total))),
        val_every=steps_per_epoch, ckpt_every=steps_per_epoch, log_every=max(1, min(50, steps_per_epoch)),
        val_max_images=len(val) if val is not None else 0, cloud_save_path=str(out))
    trainer = ClassifierTrainer(opts, config, out, DistInfo(0, 1, 0, device), train_set=train, val_set=val,
                                show_progress=progress)
    s = trainer.fit()
    last = trainer.epochs_done[-1] if trainer.epochs_done else {}
    return {"out": str(out), "preset": preset, "feature_dim": config.feature_dim, "num_classes": config.num_classes,
            "image_size": image_size, "device": str(device), "epochs": len(trainer.epochs_done), "steps": s["steps"],
            "train_images": len(train), "train_accuracy": last.get("train_accuracy", math.nan),
            "val_images": trainer.val_images, "val_accuracy": last.get("val_accuracy", math.nan),
            "seconds": s["seconds"], "stopped_by_budget": s["stopped_by_budget"], "history": trainer.epochs_done,
            "bad_files": sorted(set(trainer.bad_files) | trainer.val_bad_files)}
