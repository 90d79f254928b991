"""Fresh training pictures every epoch, for a folder written by ``imagefolder make-dataset``.

The built-in sets are procedural, so a trainer need not see the same N pictures again and again: epoch ``e`` of
``FreshPictures`` is pictures ``e*N ... (e+1)*N - 1`` of the set's training stream (stream 0 of the folder's seed,
from its ``dataset.json``), drawn at the model's image size. Epoch 0 is exactly the folder's own training
pictures, the validation folder (stream 1) stays disjoint from every epoch, and a picture depends only on
``(seed, epoch, index)``, so runs are reproducible and resume exactly. Flips follow ``flip_decision`` as in
``ImageFolderDataset``.
"""
from __future__ import annotations

import json
from pathlib import Path

from torch.utils.data import Dataset

from .folder import flip_decision
from .images import to_tensor
from .make_dataset import DATASETS, SUMMARY


class FreshPicturesError(ValueError):
    """The folder cannot feed fresh pictures (not written by make-dataset, or an unknown set)."""


def read_summary(root: str | Path) -> dict:
    """The ``dataset.json`` that make-dataset wrote in ``root`` (or in its parent, for ``root/train``)."""
    root = Path(root)
    for folder in (root, root.parent):
        path = folder / SUMMARY
        if path.is_file():
            summary = json.loads(path.read_text())
            if summary.get("dataset") not in DATASETS:
                raise FreshPicturesError(f"{path}: unknown built-in dataset {summary.get('dataset')!r}")
            return summary
    raise FreshPicturesError(f"fresh_pictures needs a folder written by 'imagefolder make-dataset' (with its "
                             f"{SUMMARY}); {root} has none")


class FreshPictures(Dataset):
    """Items ``(image (3, S, S) in [-1, 1], label, index)`` like ``ImageFolderDataset``'s; ``set_epoch`` chooses
    the pictures. ``classes`` are in ImageFolder label order (sorted names), as the folder's."""

    def __init__(self, root: str | Path, image_size: int, *, flip: bool = False, seed: int = 0):
        s = read_summary(root)
        self.source = DATASETS[s["dataset"]]
        self.data_seed, self.n = int(s["seed"]), int(s["train"])
        self.image_size, self.flip, self.seed, self.epoch = image_size, flip, seed, 0
        self.classes = sorted(self.source.classes)
        self._label = [self.classes.index(name) for name in self.source.classes]  # set's order -> sorted order

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    @property
    def labels(self) -> list[int]:
        return [self._label[i % len(self._label)] for i in range(self.n)]

    def __getitem__(self, i: int):
        first = self.epoch * self.n + i
        img_1HW3, label_1 = self.source.render(1, self.image_size, self.data_seed, first=first, stream=0)
        x = to_tensor(img_1HW3[0])
        if self.flip and flip_decision(self.seed, self.epoch, i):
            x = x.flip(-1)
        return x, self._label[int(label_1[0])], i
