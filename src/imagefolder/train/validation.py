"""The validation data every trainer shares: where the validation images are, which of them a run scores and in
what batches, and what happens to unreadable files.

A run scores up to ``val_max_images`` of the set, spread evenly over it (the set is sorted by class), each process
every ``world_size``-th of them, in micro-batches. Unreadable files are skipped and logged; when no process could
read a single picked image the run stops with a ``TrainingError`` (a validation that measures nothing would
otherwise pass silently).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import torch

from ..data.folder import BadItem, ImageFolderDataset
from ..data.images import printable
from ..distributed import all_reduce_
from .control import TrainingError


def validation_set(opts, image_size: int, classes: Sequence[str]) -> ImageFolderDataset | None:
    """``val_data_path``, else DATA/val when it exists, else None; labels follow the training ``classes``."""
    root = opts.val_data_path
    if root is None:
        candidate = Path(opts.data_path) / "val" if opts.data_path else None
        if candidate is None or not candidate.is_dir():
            return None
        root = str(candidate)
    elif not Path(root).is_dir():
        raise FileNotFoundError(f"val_data_path {root}: no such folder (give the validation images' folder, or leave "
                                "val_data_path unset and set val_every 0)")
    return ImageFolderDataset(root, image_size, classes=list(classes))


def validation_batches(trainer, val: ImageFolderDataset) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This process's share of the scored images: (images (B, 3, H, W) in [-1, 1], labels (B,)) on the CPU.
    Every process must run it to the end (it ends with a collective that checks that something was read)."""
    info, log = trainer.info, trainer.log
    n = min(len(val), trainer.opts.val_max_images)
    picks = torch.linspace(0, len(val) - 1, n).round().long().tolist() if n < len(val) else list(range(n))
    mine = picks[info.rank::info.world_size]
    unreadable: list[BadItem] = []
    seen = 0
    for start in range(0, len(mine), trainer.micro_batch):
        items = [val[i] for i in mine[start:start + trainer.micro_batch]]
        unreadable += [it for it in items if isinstance(it, BadItem)]
        items = [it for it in items if not isinstance(it, BadItem)]
        if items:
            seen += len(items)
            yield torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])
    for item in unreadable:
        trainer.val_bad_files.add(item.path)
        log.line(f"validation: skipped unreadable file {printable(item.path)}: {printable(item.reason)}")
    seen_anywhere = all_reduce_(torch.tensor(float(seen), device=trainer.device)).item()
    if not seen_anywhere and unreadable:
        example = f" (e.g. {printable(unreadable[0].path)}: {printable(unreadable[0].reason)})"
        raise TrainingError(f"validation set {printable(str(val.root))}: none of the {len(mine)} images could be "
                            f"read{example}; fix the files, point val_data_path elsewhere, or set val_every 0")
