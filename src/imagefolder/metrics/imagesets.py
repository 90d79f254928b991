"""Image sets for evaluation: a folder of images or an ``.npz`` of images, read in batches as uint8 (B, H, W, 3).

* Folder: every image below it (recursive, sorted by relative path; ``data.images.find_images``). With ``size``
  each image is center-cropped to ``size x size`` (ADM crop); without it all images must share one size.
  When some file names end in ``_classNNNN`` (what ``imagefolder sample`` writes), only those files are taken
  (not the ``grid.png`` beside them) and NNNN is the label; otherwise labels come from the first-level folder
  names (the ImageFolder layout ``root/CLASS_NAME/...``, classes in sorted order) when every image lies in such
  a folder, else there are none.
* ``.npz``: ``arr_0`` = uint8 (N, H, W, 3) (the layout the ADM evaluator reads and ``imagefolder sample --npz``
  writes), streamed from the archive batch by batch; labels from an optional ``labels`` array (N,).

``names`` identify images for pairing reconstructions with originals: relative paths without the file suffix
for folders, index strings for npz files.

Glossary: ``N`` images, ``B`` batch, ``H W`` image size.
"""
from __future__ import annotations

import re
import zipfile
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..data.images import ImageError, center_crop_arr, find_images, load_rgb

CLASS_IN_NAME = re.compile(r"_class(\d+)$")


@dataclass
class ImageSet(ABC):
    source: str                        # the folder or file as given
    names: list[str]                   # one per image, see the module docstring
    labels: np.ndarray | None          # (N,) int64 class ids, or None
    label_source: str | None           # "file names", "class folders", "npz labels" or None
    label_names: list[str] | None      # class folder names of the label ids ("class folders" only)
    image_shape: tuple[int, int]       # (H, W) of every image as read
    ignored: int = 0                   # files left out (folders: the grid.png beside named samples)

    def __len__(self) -> int:
        return len(self.names)

    @abstractmethod
    def batches(self, batch_size: int, workers: int = 1) -> Iterator[np.ndarray]:
        """The images in order, ``batch_size`` at a time: uint8 (B, H, W, 3)."""


class FolderImages(ImageSet):
    def __init__(self, root: str | Path, size: int | None = None, paths: list[Path] | None = None):
        """All images under ``root`` (or the given ``paths`` below it, in that order). When some file names end
        in ``_classNNNN``, only those files are taken (the samples, not the ``grid.png`` beside them)."""
        self.root, self.size = Path(root), size
        ignored = 0
        if paths is None:
            found = find_images(self.root)
            paths = [p for p in found if CLASS_IN_NAME.search(p.stem)] or found
            ignored = len(found) - len(paths)
        self.paths = paths
        rel = [p.relative_to(self.root) for p in self.paths]
        labels, label_source, label_names = _folder_labels(rel)
        first = self._read(self.paths[0], None)
        super().__init__(str(root), [r.with_suffix("").as_posix() for r in rel], labels, label_source, label_names,
                         first.shape[:2], ignored)

    def subset(self, indices: list[int]) -> "FolderImages":
        """The images at ``indices``, in that order (labels recomputed from their names)."""
        return FolderImages(self.root, self.size, [self.paths[i] for i in indices])

    def _read(self, path: Path, shape: tuple[int, int] | None) -> np.ndarray:
        img = load_rgb(path)
        arr_HW3 = center_crop_arr(img, self.size) if self.size else np.asarray(img)
        if shape is not None and arr_HW3.shape[:2] != shape:
            raise ImageError(f"{path}: {arr_HW3.shape[1]}x{arr_HW3.shape[0]} but {self.paths[0].name} is "
                             f"{shape[1]}x{shape[0]}; give --image-size N to center-crop every image to N x N")
        return arr_HW3

    def batches(self, batch_size: int, workers: int = 1) -> Iterator[np.ndarray]:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL decodes without holding the GIL
            for start in range(0, len(self.paths), batch_size):
                chunk = self.paths[start:start + batch_size]
                yield np.stack(list(pool.map(lambda p: self._read(p, self.image_shape), chunk)))


class NpzImages(ImageSet):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        keys = npz_keys(self.path)
        if "arr_0" not in keys:
            raise ImageError(f"{self.path}: no arr_0 array of images (keys: {', '.join(keys) or 'none'})")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                labels = z["labels"] if "labels" in keys else None
            if labels is not None:
                if not np.issubdtype(labels.dtype, np.integer):
                    raise ImageError(f"{self.path}: labels are {labels.dtype}; expected integer class ids")
                labels = labels.astype(np.int64)
            with zipfile.ZipFile(self.path) as zf, zf.open("arr_0.npy") as f:
                shape = _read_npy_header(f, self.path)
        except ImageError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ImageError(f"{self.path}: unreadable npz file ({e})") from None
        if len(shape) != 4 or shape[3] != 3:
            raise ImageError(f"{self.path}: arr_0 has shape {shape}; expected uint8 images (N, H, W, 3)")
        if shape[0] == 0 or shape[1] == 0 or shape[2] == 0:
            raise ImageError(f"{self.path}: arr_0 holds no images (shape {shape})")
        if labels is not None and labels.shape != (shape[0],):
            raise ImageError(f"{self.path}: labels has shape {labels.shape}, expected ({shape[0]},)")
        super().__init__(str(path), [str(i) for i in range(shape[0])], labels,
                         "npz labels" if labels is not None else None, None, (shape[1], shape[2]))

    def batches(self, batch_size: int, workers: int = 1) -> Iterator[np.ndarray]:
        h, w = self.image_shape
        row = h * w * 3
        with zipfile.ZipFile(self.path) as zf, zf.open("arr_0.npy") as f:
            _read_npy_header(f, self.path)
            for start in range(0, len(self), batch_size):
                n = min(batch_size, len(self) - start)
                data = bytearray(f.read(n * row))  # writable, so torch.from_numpy takes it as is
                if len(data) != n * row:
                    raise ImageError(f"{self.path}: arr_0 is truncated (image {start + len(data) // row} of "
                                     f"{len(self)})")
                yield np.frombuffer(data, dtype=np.uint8).reshape(n, h, w, 3)


def npz_keys(path: Path) -> list[str]:
    """The array names in an ``.npz`` file; ``ImageError`` when it is not one."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-len(".npy")] for n in zf.namelist() if n.endswith(".npy")]
    except (OSError, zipfile.BadZipFile) as e:
        raise ImageError(f"{path}: not an .npz file ({e})") from None


def _read_npy_header(f, path: Path) -> tuple[int, ...]:
    """Read an ``.npy`` header from the open file ``f`` (left at the first data byte); returns the shape. The array
    must be C-ordered uint8."""
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(f)
    if dtype != np.uint8 or fortran_order:
        raise ImageError(f"{path}: arr_0 is {'Fortran-ordered ' if fortran_order else ''}{dtype}; expected "
                         "C-ordered uint8 images (N, H, W, 3)")
    return shape


def _folder_labels(rel: list[Path]) -> tuple[np.ndarray | None, str | None, list[str] | None]:
    matches = [CLASS_IN_NAME.search(r.stem) for r in rel]
    if all(matches):
        return np.array([int(m.group(1)) for m in matches], dtype=np.int64), "file names", None
    if all(len(r.parts) >= 2 for r in rel):
        names = sorted({r.parts[0] for r in rel})
        index = {n: i for i, n in enumerate(names)}
        return np.array([index[r.parts[0]] for r in rel], dtype=np.int64), "class folders", names
    return None, None, None


def open_images(path: str | Path, size: int | None = None) -> ImageSet:
    """A folder or an ``.npz`` of images; ``size`` center-crops folder images (npz images are used as stored)."""
    path = Path(path)
    if path.is_dir():
        return FolderImages(path, size)
    if path.is_file():
        return NpzImages(path)
    raise FileNotFoundError(f"no such folder or file: {path}")


def pair_by_name(recons: ImageSet, originals: ImageSet) -> tuple[ImageSet, str]:
    """``originals`` reordered to match ``recons`` image by image, and how: two folders by relative path without
    suffix ("file names": a reconstruction ``a/b.png`` pairs with ``a/b.jpg``), otherwise "index" (the counts
    must then be equal)."""
    if isinstance(recons, FolderImages) and isinstance(originals, FolderImages):
        where = {n: i for i, n in enumerate(originals.names)}
        missing = [n for n in recons.names if n not in where]
        if missing:
            raise ImageError(f"{len(missing)} reconstruction(s) have no original of the same name in "
                             f"{originals.source} (e.g. {', '.join(missing[:3])})")
        return originals.subset([where[n] for n in recons.names]), "file names"
    if len(recons) != len(originals):
        raise ImageError(f"{recons.source} has {len(recons)} images but {originals.source} has {len(originals)}; "
                         "pairing by index needs equal counts")
    return originals, "index"
