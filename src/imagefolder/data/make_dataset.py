"""Built-in datasets written to disk in the ImageFolder layout, with no download: ``OUT/{train,val}/CLASS/NNNNN.png``.

``DATASETS`` names the picture sets (``shapes``: procedurally drawn shapes, ``builtin``; ``photos``: crops of the
photographs inside scikit-image, ``photos``). The train split is stream 0 of the set and val is stream 1, so the two
splits are different pictures, and each split is a prefix of a larger one with the same seed. A file is named by
the picture's index in its split, so ``train/circle/00010.png`` is picture 10 of stream 0.

The splits are written into a staging folder inside OUT and moved into place when complete: a killed run leaves no
half-written split (and, with ``overwrite``, the previous splits stay until the new ones are complete). Last comes
``OUT/dataset.json``, the summary, whose ``classes`` are in ImageFolder label order (sorted folder names).

Glossary: ``N`` pictures, ``H = W`` side.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..checkpoint import atomic_write
from .builtin import CLASS_NAMES, builtin_images
from .photos import PHOTO_CLASSES, photo_crops

SPLITS = (("train", 0), ("val", 1))  # split name, picture stream
STAGING = ".make-dataset.partial"
SUMMARY = "dataset.json"
_CHUNK = 64  # pictures rendered at once


@dataclass(frozen=True)
class DatasetSource:
    classes: tuple[str, ...]  # in the set's own label order (label = index % len(classes))
    render: Callable[..., tuple[np.ndarray, np.ndarray]]  # (n, size, seed, *, first, stream) -> (N,H,W,3), (N,)
    train_per_class: int      # default pictures per class in train
    description: str


DATASETS: dict[str, DatasetSource] = {
    "shapes": DatasetSource(CLASS_NAMES, builtin_images, 500,
                            f"{len(CLASS_NAMES)} procedurally drawn shapes with random colour, size, position, "
                            "rotation and mottled gradient backgrounds"),
    "photos": DatasetSource(PHOTO_CLASSES, photo_crops, 500,
                            f"random square crops (position, scale, flip) of {len(PHOTO_CLASSES)} photographs "
                            "shipped with scikit-image, one class per photograph"),
}


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"not a folder: {out}")
    entries = sorted(p.name for p in out.iterdir() if p.name != STAGING) if out.is_dir() else []
    if entries and not overwrite:
        shown = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
        raise FileExistsError(f"{out} is not empty ({shown})")


def _write_split(source: DatasetSource, folder: Path, n: int, size: int, seed: int, stream: int, bar: tqdm) -> None:
    digits = max(5, len(str(n - 1)))
    for name in source.classes:
        (folder / name).mkdir(parents=True)
    for start in range(0, n, _CHUNK):
        images_NHW3, labels_N = source.render(min(_CHUNK, n - start), size, seed, first=start, stream=stream)
        for index, (img_HW3, label) in enumerate(zip(images_NHW3, labels_N), start=start):
            Image.fromarray(img_HW3).save(folder / source.classes[label] / f"{index:0{digits}d}.png")
        bar.update(len(labels_N))


def make_dataset(name: str, out: str | Path, *, size: int = 32, train_per_class: int | None = None,
                 val_per_class: int = 50, seed: int = 0, overwrite: bool = False,
                 progress: bool = False) -> dict[str, Any]:
    """Write dataset ``name`` (a key of ``DATASETS``) to ``out``; returns the summary (also in ``out/dataset.json``,
    there without ``out`` and ``seconds``).

    ``train_per_class``: None = the set's default. Raises ``FileExistsError`` when ``out`` holds anything and
    ``overwrite`` is false; with ``overwrite``, ``out/train`` and ``out/val`` are replaced and other files kept.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    source = DATASETS[name]
    train_per_class = source.train_per_class if train_per_class is None else train_per_class
    if size < 1 or train_per_class < 1 or val_per_class < 1:
        raise ValueError(f"size, train_per_class and val_per_class must be >= 1, got {size}, {train_per_class}, "
                         f"{val_per_class}")
    out = Path(out)
    _check_out(out, overwrite)
    per_class = {"train": train_per_class, "val": val_per_class}
    counts = {split: per_class[split] * len(source.classes) for split, _ in SPLITS}
    stage = out / STAGING
    shutil.rmtree(stage, ignore_errors=True)  # left by a killed run
    stage.mkdir(parents=True)
    start = time.perf_counter()
    with tqdm(total=sum(counts.values()), desc=f"make-dataset {name}", unit="img", disable=not progress) as bar:
        for split, stream in SPLITS:
            _write_split(source, stage / split, counts[split], size, seed, stream, bar)
    for split, _ in SPLITS:
        if (out / split).exists():
            (out / split).rename(stage / f"old-{split}")
        (stage / split).rename(out / split)
    shutil.rmtree(stage)
    summary = {"dataset": name, "description": source.description, "size": size, "seed": seed,
               "classes": sorted(source.classes), "train_per_class": train_per_class,
               "val_per_class": val_per_class, "train": counts["train"], "val": counts["val"]}
    atomic_write(out / SUMMARY, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n"))
    return {**summary, "out": str(out), "seconds": time.perf_counter() - start}
