"""``imagefolder train-classifier``: a small CNN trained on a dataset, for the domain metrics of ``evaluate``.

Trains on DATA/train (ImageFolder layout: one folder per class; DATA itself when it has no train/ folder) with
random horizontal flips, AdamW and a cosine learning-rate schedule after a short warmup, and reports the accuracy
on DATA/val (same class names) after every epoch. Unreadable image files are skipped and listed at the end. The
checkpoint (config.json with the class names, model.safetensors) is written to OUT after every epoch, each file
atomically, beside the run's checkpoints/ and log.txt; use it as 'imagefolder evaluate --classifier OUT', or as the tokenizer's semantic teacher
(semantic_guide: classifier, semantic_teacher: OUT). The work is done by
imagefolder.train.classifier_trainer.train_classifier (on the training engine).
"""
from __future__ import annotations

import sys

from ..models.classifier import CLASSIFIER_PRESETS
from . import HelpFormatter, UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("train-classifier", help="train the small domain classifier used by 'evaluate --classifier'",
                       description=__doc__.replace("``", ""), formatter_class=HelpFormatter)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="dataset folder with train/CLASS/*.png (and val/CLASS/*.png for the reported accuracy)")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint folder (created if missing; a non-empty "
                   "one only with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write the classifier into a non-empty --out, "
                   "replacing its config.json, model.safetensors and run files (checkpoints/, log.txt, ...)")
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
    p.add_argument("--time-budget-minutes", type=float, metavar="M",
                   help="also stop after M minutes of training; the lr schedule then follows the clock")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..train.classifier_trainer import train_classifier
    _check(args)
    try:
        s = train_classifier(args.data, args.out, preset=args.preset, image_size=args.image_size, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
                             workers=args.workers, device=args.device, time_budget_minutes=args.time_budget_minutes)
    except RuntimeError as e:  # an unavailable device
        raise UsageError(f"--device {args.device}: {e}") from None
    bad = s["bad_files"]
    if bad:
        print(f"imagefolder train-classifier: warning: skipped {len(bad)} unreadable file(s): {', '.join(bad[:3])}"
              f"{' ...' if len(bad) > 3 else ''}", file=sys.stderr)
    val_text = (f"val accuracy {s['val_accuracy']:.4f} on {s['val_images']} images" if s["val_images"]
                else "no val/ set")
    budget = " (stopped by the time budget)" if s["stopped_by_budget"] else ""
    print(f"trained classifier ({s['preset']}, {s['feature_dim']}-d features, {s['num_classes']} classes, "
          f"{s['image_size']} px) on {s['train_images']} images for {s['epochs']} epochs ({s['steps']} steps){budget} "
          f"in {s['seconds']:.1f} s on {s['device']}: train accuracy {s['train_accuracy']:.4f} (last epoch), "
          f"{val_text} -> {s['out']}")
    return 0


def _check(args) -> None:
    from ._outputs import check_kind, check_output, checkpoint_kind, remove_outputs
    from ._training import RUN_ENTRIES
    out = check_kind(args.out, "folder", purpose="the classifier")
    check_output(out, args.overwrite, kind="folder", holds=checkpoint_kind(out))
    if args.overwrite:  # the earlier classifier and its run files (a new run refuses another run's checkpoints)
        remove_outputs(out, ("config.json", "model.safetensors", *RUN_ENTRIES))
    for name, low in (("epochs", 1), ("batch_size", 1), ("image_size", 8), ("workers", 0)):
        if getattr(args, name) < low:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.time_budget_minutes is not None and not args.time_budget_minutes > 0:
        raise UsageError(f"--time-budget-minutes must be positive, got {args.time_budget_minutes}")
