"""``imagefolder probe --tokenizer SPEC --data DIR``: linear probing of the tokenizer's quantized features per branch.

For every branch, each image's feature is the branch's quantized latent after the last scale, mean-pooled over the
latent grid (--pool mean) or flattened (--pool flatten). A linear classifier is fitted to the standardised features
of DIR/train by full-batch L-BFGS (deterministic) and its top-1 accuracy on DIR/val is reported, naming the
semantically regularised branch. DIR is in ImageFolder layout (DIR/train/CLASS/*.png, DIR/val/CLASS/*.png, e.g.
from 'imagefolder make-dataset'); images are center-cropped and resized to the tokenizer's size. Unreadable files
are skipped and listed. --out writes the numbers as JSON.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from torch.utils.data import DataLoader

from ..hub import SPEC_HELP
from . import HelpFormatter, UsageError
from ._outputs import add_overwrite_option, check_output


def add_parser(sub) -> None:
    from ..metrics.probe import POOLS
    p = sub.add_parser(
        "probe", help="linear probing of a tokenizer's quantized features per branch (top-1 accuracy)",
        description=__doc__.replace("``", ""), formatter_class=HelpFormatter)
    p.add_argument("--tokenizer", required=True, metavar="SPEC",
                   help="official tokenizer or VAR .pt file, one of our checkpoint directories, or a preset name "
                        "(tiny, small, imagefolder-4096, ...; presets have random weights)" + SPEC_HELP)
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder with train/ and val/ class folders")
    p.add_argument("--pool", choices=POOLS, default="mean",
                   help="mean: average over the latent grid (Cb features per branch); flatten: every position "
                        "(Cb*h*w features)")
    p.add_argument("--epochs", type=int, default=100, metavar="N",
                   help="L-BFGS iterations of the classifier, each over all training features")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="L2 penalty on the classifier weights")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per tokenizer forward pass")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="image loading processes (0: in this one)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run (auto: cuda when available)")
    p.add_argument("--out", metavar="FILE", help="write the results as JSON to FILE")
    add_overwrite_option(p, "an existing --out file")
    p.set_defaults(run=run)


def _check(args) -> None:
    for name, low in (("epochs", 1), ("batch_size", 1), ("workers", 0)):
        value = getattr(args, name)
        if value < low:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if args.weight_decay < 0:
        raise UsageError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.out:
        check_output(args.out, args.overwrite, purpose="the results")


def _loaders(data: Path, image_size: int, batch_size: int, workers: int) -> tuple[DataLoader, DataLoader, list[str]]:
    from ..data.folder import ImageFolderDataset, collate_skip_bad, find_classes, split_dir

    train = ImageFolderDataset(split_dir(data, "train"), image_size)
    val_dir = split_dir(data, "val")
    extra = sorted(set(find_classes(val_dir)) - set(train.classes))
    if extra:
        raise UsageError(f"{val_dir}: classes missing from the training set: {', '.join(extra[:5])}")
    val = ImageFolderDataset(val_dir, image_size, classes=train.classes)
    train_loader, val_loader = (DataLoader(ds, batch_size=batch_size, num_workers=workers,
                                           collate_fn=collate_skip_bad) for ds in (train, val))
    return train_loader, val_loader, train.classes


def run(args) -> int:
    from ..checkpoint import atomic_write
    from ..data import ImageError
    from ..distributed import pick_device
    from ..metrics.probe import probe_tokenizer
    from ..loading import load_tokenizer

    _check(args)
    try:
        device = pick_device(args.device)
    except RuntimeError as e:
        raise UsageError(f"--device {args.device}: {e}") from None
    tok = load_tokenizer(args.tokenizer).to(device)
    start = time.perf_counter()
    try:
        train, val, classes = _loaders(Path(args.data), tok.config.image_size, args.batch_size, args.workers)
        res = probe_tokenizer(tok, train, val, num_classes=len(classes), pool=args.pool, max_iter=args.epochs,
                              weight_decay=args.weight_decay, batch_size=args.batch_size, progress=True)
    except ImageError as e:
        raise UsageError(str(e)) from None
    seconds = time.perf_counter() - start
    branches = [f"branch{p}" for p in range(tok.num_branches)]
    for name in branches:
        tag = " (semantic)" if name == res["semantic"] else ""
        print(f"{name}{tag}: top-1 {100 * res[name]:.1f}% val, {100 * res['train_accuracy'][name]:.1f}% train "
              f"({res['feature_dims'][name]} features)")
    print(f"linear probe ({args.pool} pool) of {args.tokenizer} on {res['num_val']} val images after "
          f"{res['num_train']} train images, {len(classes)} classes (chance {100 / len(classes):.1f}%), "
          f"semantic branch: {res['semantic']}, {len(res['skipped'])} unreadable files skipped; {seconds:.1f} s")
    if args.out:
        report = {"tokenizer": str(args.tokenizer), "data": str(args.data), "pool": args.pool,
                  "epochs": args.epochs, "weight_decay": args.weight_decay, "classes": classes,
                  "chance": 1 / len(classes), **res, "device": str(device), "seconds": seconds}
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
        print(f"results in {args.out}")
    return 0

