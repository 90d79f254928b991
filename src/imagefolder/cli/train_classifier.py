"""``imagefolder train-classifier``: a small CNN trained on a dataset, for the domain metrics of ``evaluate``.

Trains on DATA/train (ImageFolder layout: one folder per class; DATA itself when it has no train/ folder) with
random horizontal flips, AdamW and a cosine learning-rate schedule after a short warmup, and reports the accuracy
on DATA/val (same class names) after every epoch. Unreadable image files are skipped and listed at the end. The
checkpoint (config.json with the class names, model.safetensors) is written to OUT at the end, each file
atomically; use it as 'imagefolder evaluate --classifier OUT'.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.folder import ImageFolderDataset, collate_skip_bad, split_dir
from ..data.images import ImageError
from ..models.classifier import CLASSIFIER_PRESETS, DomainClassifier, classifier_preset, save_classifier
from . import UsageError

WARMUP_FRACTION = 0.05   # of all steps, linear from 0 (at most WARMUP_MAX steps)
WARMUP_MAX = 200
EVAL_BATCH = 256


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Defaults after the options that have one (not flags or unset options); the description keeps its lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def add_parser(sub) -> None:
    p = sub.add_parser("train-classifier", help="train the small domain classifier used by 'evaluate --classifier'",
                       description=__doc__.replace("``", ""), formatter_class=_HelpFormatter)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="dataset folder with train/CLASS/*.png (and val/CLASS/*.png for the reported accuracy)")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint folder (created if missing)")
    p.add_argument("--preset", choices=tuple(CLASSIFIER_PRESETS), default="tiny",
                   help="network size: tiny = width 32 (128-d features), small = width 64 (256-d features)")
    p.add_argument("--image-size", type=int, default=32, metavar="PX",
                   help="training resolution; images are center-cropped (ADM crop) to it")
    p.add_argument("--epochs", type=int, default=6, metavar="N", help="passes over the training set")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation, shuffling and flips")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="data loading processes (0: load in the training process)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda when available, else the CPU")
    p.set_defaults(run=run)


def run(args) -> int:
    try:
        return _run(args)
    except ImageError as e:
        raise UsageError(str(e)) from None


def _check(args) -> None:
    for name, low in (("epochs", 1), ("batch_size", 1), ("image_size", 8), ("workers", 0)):
        if getattr(args, name) < low:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")


def _device(choice: str) -> torch.device:
    from ..distributed import pick_device
    try:
        return pick_device(choice)
    except RuntimeError as e:
        raise UsageError(f"--device {choice}: {e}") from None


def _datasets(args) -> tuple[ImageFolderDataset, ImageFolderDataset | None]:
    data = Path(args.data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: no such folder")
    train = ImageFolderDataset(split_dir(data, "train"), args.image_size, flip=True, seed=args.seed)
    if len(train.classes) < 2:
        raise UsageError(f"{split_dir(data, 'train')}: one class folder ({train.classes[0]}); a classifier needs two "
                         "or more")
    val = (ImageFolderDataset(data / "val", args.image_size, classes=train.classes) if (data / "val").is_dir()
           else None)
    return train, val


def _lr_factor(step: int, total: int) -> float:
    warmup = max(1, min(WARMUP_MAX, round(WARMUP_FRACTION * total)))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def _accuracy(model: DomainClassifier, dataset: ImageFolderDataset, device: torch.device,
             workers: int = 0) -> tuple[float, int, list[str]]:
    """Top-1 accuracy over the readable images of ``dataset``, their count, and the unreadable files."""
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
    model.train()
    return (correct / seen if seen else float("nan")), seen, bad


def _run(args) -> int:
    _check(args)
    device = _device(args.device)
    torch.manual_seed(args.seed)
    train, val = _datasets(args)
    config = classifier_preset(args.preset, image_size=args.image_size, num_classes=len(train.classes))
    model = DomainClassifier(config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _lr_factor(step, total))
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        collate_fn=collate_skip_bad, generator=torch.Generator().manual_seed(args.seed),
                        persistent_workers=args.workers > 0)
    bad: set[str] = set()
    val_acc, val_seen, loss_ema = float("nan"), 0, None
    start = time.perf_counter()
    with tqdm(total=total, desc="train-classifier", unit="step", disable=None) as bar:
        for epoch in range(args.epochs):
            train.set_epoch(epoch)
            correct = seen = 0
            for batch in loader:
                bad.update(b.path for b in batch.bad)
                if len(batch.labels):
                    x, y = batch.images.to(device), batch.labels.to(device)
                    logits = model(x)
                    loss = F.cross_entropy(logits, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_ema = loss.item() if loss_ema is None else 0.9 * loss_ema + 0.1 * loss.item()
                    correct += int((logits.argmax(dim=1) == y).sum())
                    seen += len(y)
                sched.step()
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_ema:.3f}" if loss_ema is not None else "-",
                                train_acc=f"{correct / max(1, seen):.3f}", refresh=False)
            if val is not None:
                val_acc, val_seen, val_bad = _accuracy(model, val, device, args.workers)
                bad.update(val_bad)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_ema:.3f}" if loss_ema is not None else "-",
                                train_acc=f"{correct / max(1, seen):.3f}", val_acc=f"{val_acc:.3f}")
    seconds = time.perf_counter() - start
    train_acc = correct / max(1, seen)
    info = {"data": str(args.data), "epochs": args.epochs, "steps": total, "train_images": len(train),
            "train_accuracy": round(train_acc, 6), "seed": args.seed, "seconds": round(seconds, 1)}
    if val is not None and val_seen:
        info.update(val_images=val_seen, val_accuracy=round(val_acc, 6))
    save_classifier(model.cpu().eval(), train.classes, args.out, info=info)
    if bad:
        shown = ", ".join(sorted(bad)[:3])
        print(f"imagefolder train-classifier: warning: skipped {len(bad)} unreadable file(s): {shown}"
              f"{' ...' if len(bad) > 3 else ''}", file=sys.stderr)
    val_text = f"val accuracy {val_acc:.4f} on {val_seen} images" if val is not None and val_seen else "no val/ set"
    print(f"trained classifier ({args.preset}, {config.feature_dim}-d features, {config.num_classes} classes, "
          f"{config.image_size} px) on {len(train)} images for {args.epochs} epochs ({total} steps) in {seconds:.1f} s "
          f"on {device}: train accuracy {train_acc:.4f} (last epoch), {val_text} -> {args.out}")
    return 0
