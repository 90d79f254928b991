"""A photo-crop picture set that needs no download: square crops of the colour photographs shipped inside scikit-image.

One class per source photograph. Each picture is a square crop at a random position and scale (30-80% of the
shorter side of the photo's usable region), flipped left-right half of the time, resized to ``size`` with an
antialiasing filter. As in ``builtin``, picture ``i`` of seed ``s`` in stream ``t`` depends only on ``(s, t, i)``,
labels cycle through the classes (``i % len(PHOTO_CLASSES)``) and streams give independent sets (train / val crops
of one photo may still overlap in area). The files are read from the installed ``skimage/data`` folder directly,
never through scikit-image's downloader.

Glossary: ``N`` images, ``H = W`` output side.
"""
from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

import numpy as np
from PIL import Image

# class name -> (file in skimage/data, usable region (left, top, right, bottom) as fractions of the photo)
_PHOTOS: dict[str, tuple[str, tuple[float, float, float, float]]] = {
    "astronaut": ("astronaut.png", (0.0, 0.0, 1.0, 1.0)),
    "cat": ("chelsea.png", (0.0, 0.0, 1.0, 1.0)),
    "coffee": ("coffee.png", (0.0, 0.0, 1.0, 1.0)),
    "galaxies": ("hubble_deep_field.jpg", (0.0, 0.0, 1.0, 1.0)),
    "tissue": ("ihc.png", (0.0, 0.0, 1.0, 1.0)),
    "motorcycle": ("motorcycle_left.png", (0.0, 0.0, 1.0, 1.0)),
    "retina": ("retina.jpg", (0.15, 0.15, 0.85, 0.85)),  # inside the black border of the fundus photo
    "rocket": ("rocket.jpg", (0.0, 0.0, 1.0, 1.0)),
}
PHOTO_CLASSES = tuple(_PHOTOS)
SCALE_RANGE = (0.3, 0.8)  # crop side as a fraction of the shorter side of the usable region


@lru_cache(maxsize=None)
def load_photo(name: str) -> Image.Image:
    """The usable region of class ``name``'s photograph as an RGB image (read once per process)."""
    file, (left, top, right, bottom) = _PHOTOS[name]
    path = files("skimage.data") / file
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not in this scikit-image installation (the '{name}' class of the photos "
                                "set needs it)") from None
    w, h = rgb.size
    return rgb.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))


def _crop(photo: Image.Image, draws: np.ndarray, size: int) -> np.ndarray:
    """One crop (size, size, 3) uint8 from 4 uniforms: scale, x, y, flip."""
    w, h = photo.size
    side = (SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * draws[0]) * min(w, h)
    x0, y0 = draws[1] * (w - side), draws[2] * (h - side)
    img = photo.resize((size, size), Image.Resampling.LANCZOS, box=(x0, y0, x0 + side, y0 + side), reducing_gap=3.0)
    if draws[3] < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(img)


def photo_crops(n: int, size: int = 32, seed: int = 0, *, first: int = 0,
                stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Crops ``first .. first + n - 1`` of stream ``stream``: (n, size, size, 3) uint8 and their labels (n,) int64
    (indices into ``PHOTO_CLASSES``)."""
    if n < 0 or size < 1 or first < 0 or stream < 0:
        raise ValueError(f"need n >= 0, size >= 1, first >= 0 and stream >= 0, got n={n}, size={size}, "
                         f"first={first}, stream={stream}")
    labels_N = np.arange(first, first + n, dtype=np.int64) % len(PHOTO_CLASSES)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for k, label in enumerate(labels_N):
        draws = np.random.default_rng([seed, stream, first + k]).random(4)
        images[k] = _crop(load_photo(PHOTO_CLASSES[label]), draws, size)
    return images, labels_N
