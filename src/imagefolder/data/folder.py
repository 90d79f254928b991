"""Labelled image datasets in the ImageFolder layout: ``root/CLASS_NAME/**/*.png|jpg|...``, classes sorted by name.

Unreadable files (corrupt, truncated, not an image) do not stop a run: an item that fails to load comes back as a
``BadItem`` naming the file, ``collate_skip_bad`` drops it from the batch and reports its path, and the trainer
counts and logs it. Random horizontal flips are a pure function of ``(seed, epoch, index)`` (``set_epoch``), so
the augmentation of an image does not depend on worker count, process count or resumption.

Glossary: ``B`` batch, ``H = W`` image side.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
from torch.utils.data import Dataset

from .images import ImageError, find_images, load_image, printable


class BadItem(NamedTuple):
    path: str
    reason: str


@dataclass
class Batch:
    """A collated micro-batch: pictures, or (from a codes cache, ``collate_codes``) their codes, never both."""

    images: torch.Tensor | None                             # (B, 3, H, W) float32 in [-1, 1]; None for codes
    labels: torch.Tensor                                    # (B,) int64
    indices: torch.Tensor                                   # (B,) dataset indices
    bad: list[BadItem] = field(default_factory=list)        # files of this batch that could not be read
    codes: torch.Tensor | None = None                       # (B, P, L) int64 codes; None for pictures

    def __len__(self) -> int:
        return self.labels.shape[0]


def flip_decision(seed: int, epoch: int, index: int) -> bool:
    """A fair coin for (seed, epoch, index), the same in every process."""
    h = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=1).digest()
    return bool(h[0] & 1)


def find_classes(root: str | Path) -> list[str]:
    """Sorted names of the class folders under ``root``; clear errors for a missing folder or one without classes."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ImageError(f"{root}: no class folders (expected the ImageFolder layout {root}/CLASS_NAME/image.png)")
    return classes


def split_dir(root: str | Path, split: str) -> Path:
    """``root/split`` when it exists (a dataset with train/ and val/), else ``root`` itself for ``train``."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {root}")
    if (root / split).is_dir():
        return root / split
    if split == "train" and root.is_dir():
        return root
    raise FileNotFoundError(f"{root}: no '{split}' folder (expected {root}/{split}/CLASS_NAME/image.png)")


class ImageFolderDataset(Dataset):
    """Items ``(image (3, H, W) in [-1, 1], label, index)``, or a ``BadItem`` for a file that cannot be read.

    ``classes``: fix the class list (e.g. the training set's for a validation set); by default the sorted folder
    names. Images are center-cropped (ADM crop) to ``image_size``; ``flip`` adds random horizontal flips.
    """

    def __init__(self, root: str | Path, image_size: int, *, flip: bool = False, seed: int = 0,
                 classes: Sequence[str] | None = None):
        self.root = Path(root)
        self.image_size = image_size
        self.flip, self.seed, self.epoch = flip, seed, 0
        own = find_classes(self.root)
        if classes is not None:  # e.g. a validation set labelled by the training set's classes
            foreign = [c for c in own if c not in set(classes)]
            if foreign:
                raise ImageError(f"{printable(str(self.root))}: class folder(s) {', '.join(map(printable, foreign[:5]))}"
                                 f" are not classes of the training data ({', '.join(map(printable, classes[:5]))}"
                                 f"{' ...' if len(classes) > 5 else ''}); their images would get no label or the "
                                 "wrong one. Rename or remove them.")
        self.classes = list(classes) if classes is not None else own
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            folder = self.root / name
            if not folder.is_dir():
                continue
            try:
                self.samples += [(p, label) for p in find_images(folder)]
            except ImageError:
                if classes is None:  # the folders define the classes: an empty one would be a class never seen
                    raise ImageError(f"{printable(str(folder))}: a class folder with no images (every folder under "
                                     f"{printable(str(self.root))} is a class); add its images or remove it") from None
        if not self.samples:
            raise ImageError(f"{self.root}: no images in its class folders ({', '.join(self.classes[:5])}"
                             f"{' ...' if len(self.classes) > 5 else ''})")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            x = load_image(path, self.image_size)
        except (ImageError, OSError) as e:
            return BadItem(str(path), str(e))
        if self.flip and flip_decision(self.seed, self.epoch, i):
            x = x.flip(-1)
        return x, label, i


class TensorImageDataset(Dataset):
    """Images already in memory (N, 3, H, W) in [-1, 1] with labels, with the same items and flips as above."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], *, flip: bool = False,
                 seed: int = 0):
        self.images, self.label_tensor, self.classes = images, labels.long(), list(classes)
        self.flip, self.seed, self.epoch = flip, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def labels(self) -> list[int]:
        return self.label_tensor.tolist()

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.flip and flip_decision(self.seed, self.epoch, i):
            x = x.flip(-1)
        return x, int(self.label_tensor[i]), i


def collate_skip_bad(items: list) -> Batch:
    """DataLoader ``collate_fn`` of picture items ``(x, label, index)``: stack the readable items, report the others
    in ``Batch.bad``."""
    return _collate(items, "images")


def collate_codes(items: list) -> Batch:
    """``collate_skip_bad`` for code items ``(codes (P, L), label, index)``: the stack goes to ``Batch.codes``."""
    return _collate(items, "codes")


def _collate(items: list, field_name: str) -> Batch:
    good = [it for it in items if not isinstance(it, BadItem)]
    bad = [it for it in items if isinstance(it, BadItem)]
    stacked = torch.stack([g[0] for g in good]) if good else torch.empty(0)
    data = {"images": None, field_name: stacked}
    return Batch(labels=torch.tensor([g[1] for g in good], dtype=torch.long),
                 indices=torch.tensor([g[2] for g in good], dtype=torch.long), bad=bad, **data)
