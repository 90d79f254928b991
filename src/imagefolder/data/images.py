"""Image files on disk: finding them, reading them as RGB, and the ADM-style center crop to a square size.

Tensors produced here are ``(3, H, W)`` float32 in [-1, 1], the tokenizer's input range.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


class ImageError(ValueError):
    """An image file cannot be used (unreadable, corrupt) or a folder holds no images; the message names it."""


def printable(text: str) -> str:
    """``text`` with bytes that are not UTF-8 (file names on POSIX may hold any bytes) written as escapes, so it
    can go to a log, a terminal or JSON."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")  # the original bytes
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def find_images(root: str | Path) -> list[Path]:
    """All image files under ``root`` (recursive, by extension, case-insensitive), sorted by their relative path.

    Hidden files and folders (names starting with ``.``) are skipped. Raises ``FileNotFoundError`` /
    ``NotADirectoryError`` for a missing folder or a file, and ``ImageError`` when no image is found.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    found = [p for p in root.rglob("*")
             if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if not found:
        raise ImageError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def load_rgb(path: str | Path) -> Image.Image:
    """Read ``path`` fully and return it as an RGB image; any decoding failure becomes an ``ImageError``."""
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb(img)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"{printable(str(path))}: cannot read image ({printable(str(e))})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB with 8 bits per channel. Pillow's own conversion clips 16-bit and 32-bit grey levels at 255 (a 16-bit
    PNG would come out near-white), so those are scaled to 0..255 here; float images are taken as 0..1."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            scale = 255.0 if a.size and np.nanmax(a) <= 1.0 else 1.0
        elif img.mode == "I" and a.size and a.max() <= 255 and img.format not in ("PNG", "TIFF"):
            scale = 1.0
        else:
            scale = 255.0 / 65535.0  # 16-bit samples (Pillow keeps them in mode I;16* or I)
        grey = np.clip(np.nan_to_num(a * scale), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow warns when a palette image with transparency goes straight to RGB
    return img.convert("RGB")


def center_crop_arr(img: Image.Image, size: int) -> np.ndarray:
    """ADM's center crop: halve with BOX filtering while the short side is at least ``2 * size``, resize with
    BICUBIC so the short side is ``size``, then cut the central ``size x size`` square. Returns (size, size, C) uint8.
    """
    while min(img.size) >= 2 * size:
        img = img.resize((img.width // 2, img.height // 2), resample=Image.BOX)
    scale = size / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), resample=Image.BICUBIC)
    arr_HWC = np.asarray(img)
    top, left = (arr_HWC.shape[0] - size) // 2, (arr_HWC.shape[1] - size) // 2
    return arr_HWC[top:top + size, left:left + size]


def to_tensor(arr_HW3: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1]."""
    return torch.tensor(arr_HW3).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor, *, low: float = -1.0) -> torch.Tensor:
    """Pictures with values in [``low``, 1] -> uint8 of the same layout: clamped and rounded (in float64) to the
    nearest of 256 levels, what a PNG keeps. The package's one conversion to 8 bits; ``low`` is -1 for the public
    range (what ``Tokenizer.decode`` and ``Generator.generate`` return, ``to_tensor`` gives), 0 for [0, 1]."""
    return x.detach().double().sub(low).div(1.0 - low).clamp(0, 1).mul(255).round().to(torch.uint8)


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """One image file, center-cropped to ``size``: (3, size, size) float32 in [-1, 1]."""
    return to_tensor(center_crop_arr(load_rgb(path), size))


class ImageFiles(Dataset):
    """Image files read on access: item ``i`` is ``load_image(paths[i], size)``."""

    def __init__(self, paths: Sequence[str | Path], size: int):
        self.paths = [Path(p) for p in paths]
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return load_image(self.paths[i], self.size)
