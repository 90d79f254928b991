"""A built-in picture set that needs no download: coloured shapes on mottled gradient backgrounds, one class per shape.

Each picture has a random shape size (40-80% of the side), position, rotation, foreground colour, background
gradient and background mottling. Image ``i`` of seed ``s`` in stream ``t`` depends only on ``(s, t, i)`` and is
drawn in resolution-free coordinates, so a set of ``n`` images is a prefix of any larger set with the same seed, the
same picture renders at any size, and streams give disjoint picture sets (a dataset's train and val splits). Labels
cycle through the classes (image ``i`` has label ``i % NUM_CLASSES``). Edges are anti-aliased by supersampling.

Glossary: ``N`` images, ``S`` supersampled side, ``H = W`` output side, ``G`` side of the mottling lattice.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ("circle", "square", "triangle", "star", "ring", "cross", "hexagon", "crescent", "heart", "stripes")
NUM_CLASSES = len(CLASS_NAMES)
_MAX_SUPERSAMPLE = 4  # samples per pixel side: 4 up to 64 px, 2 from 128 px (large pictures alias little anyway)
_CHUNK = 32  # images rendered together: bounds the (N, S, S) work arrays to a few MB at 64 px


# shape masks in shape-local coordinates (u, v): the shape spans about [-1, 1]^2 ----------------------------------
def _regular_polygon(u: np.ndarray, v: np.ndarray, sides: int) -> np.ndarray:
    """Inside the regular polygon with circumradius 1 and a vertex on the +v axis."""
    sector = 2 * np.pi / sides
    angle = np.mod(np.arctan2(u, v), sector) - sector / 2
    return np.hypot(u, v) * np.cos(angle) <= np.cos(np.pi / sides)


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.45) -> np.ndarray:
    """Inside a star with outer radius 1 and inner radius ``inner``, a tip on the +v axis."""
    sector = 2 * np.pi / points
    a = np.mod(np.arctan2(u, v), sector)
    a = np.minimum(a, sector - a)  # fold: 0 at a tip, sector / 2 at an inner corner
    rho = np.hypot(u, v)
    px, py = rho * np.cos(a), rho * np.sin(a)
    ix, iy = inner * np.cos(sector / 2), inner * np.sin(sector / 2)
    # the origin and the point lie on the same side of the edge tip (1, 0) -> inner corner (ix, iy)
    return (ix - 1) * py - iy * (px - 1) <= 0


def _shape_mask(label: int, u: np.ndarray, v: np.ndarray, stripe_freq: np.ndarray) -> np.ndarray:
    name = CLASS_NAMES[label]
    if name == "circle":
        return u * u + v * v <= 1
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if name == "triangle":
        return _regular_polygon(u, v + 0.2, 3)  # shifted so the triangle's centroid sits near the centre
    if name == "star":
        return _star(u, v)
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1) & (r2 >= 0.55 ** 2)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 1)) | ((av <= 0.3) & (au <= 1))
    if name == "hexagon":
        return _regular_polygon(u, v, 6)
    if name == "crescent":
        return (u * u + v * v <= 1) & ((u - 0.5) ** 2 + (v + 0.15) ** 2 >= 0.8 ** 2)
    if name == "heart":
        x, y = 1.15 * u, 1.15 * (0.15 - v)  # y points up; the lobes are on top
        return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0
    if name == "stripes":  # bands over the whole picture, across the shape's direction
        return np.sin(np.pi * stripe_freq * u) >= 0
    raise AssertionError(name)


# colours ---------------------------------------------------------------------------------------------------------
def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all in [0, 1]; returns (..., 3)."""
    k = np.mod(np.stack([5.0, 3.0, 1.0], axis=-1) + h[..., None] * 6, 6)
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


_NUM_PARAMS = 14
_LATTICE = 5  # G: the mottling is value noise on a G x G lattice spanning the picture
_NUM_DRAWS = _NUM_PARAMS + _LATTICE * _LATTICE


def _draw_parameters(seed: int, index: int, stream: int = 0) -> np.ndarray:
    """The random numbers of one picture, from its own stream: (14 + G*G,) uniforms in [0, 1)."""
    return np.random.default_rng([seed, stream, index]).random(_NUM_DRAWS)


def _pixel_centres(side: int) -> np.ndarray:
    """Centres of ``side`` pixels spanning [-1, 1]: (side,) float32."""
    return (np.arange(side, dtype=np.float32) + 0.5) / side * 2 - 1


def _placement(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shape centre (cx, cy) and radius, each (N,), in picture coordinates; the shape stays inside the picture."""
    radius = 0.4 + 0.4 * p[9]
    room = 0.95 - radius
    return room * (2 * p[7] - 1), room * (2 * p[8] - 1), radius


def _coverage(labels_N: np.ndarray, p: np.ndarray, size: int) -> np.ndarray:
    """The fraction of each pixel the shape covers, (N, size, size) float32, by supersampling its mask.
    ``p``: parameters (14, N); picture coordinates span [-1, 1]^2 with y downwards."""
    ss = max(2, min(_MAX_SUPERSAMPLE, 256 // size))  # samples per pixel side
    cx, cy, radius = _placement(p)
    theta = 2 * np.pi * p[10]
    stripe_freq = 1.5 + 2.0 * p[12]
    centres = _pixel_centres(size * ss)
    dx = centres[None, None, :] - cx[:, None, None]
    dy = centres[None, :, None] - cy[:, None, None]
    cos_t, sin_t, r = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None], radius[:, None, None]
    u_NSS, v_NSS = (cos_t * dx + sin_t * dy) / r, (cos_t * dy - sin_t * dx) / r
    mask_NSS = np.empty(u_NSS.shape, dtype=bool)
    for label in np.unique(labels_N):
        sel = labels_N == label
        mask_NSS[sel] = _shape_mask(int(label), u_NSS[sel], v_NSS[sel], stripe_freq[sel][:, None, None])
    return mask_NSS.reshape(-1, size, ss, size, ss).mean(axis=(2, 4), dtype=np.float32)


def _mottling(lattice_NGG: np.ndarray, size: int) -> np.ndarray:
    """Value noise in [0, 1): the lattice values bilinearly interpolated at the pixel centres, (N, size, size)."""
    t = (_pixel_centres(size) + 1) / 2 * (_LATTICE - 1)  # lattice coordinates of the pixel centres
    i0 = np.minimum(np.floor(t).astype(np.int64), _LATTICE - 2)
    f = (t - i0).astype(np.float32)
    rows = lattice_NGG[:, i0] * (1 - f)[None, :, None] + lattice_NGG[:, i0 + 1] * f[None, :, None]  # (N, size, G)
    return rows[:, :, i0] * (1 - f) + rows[:, :, i0 + 1] * f


def _render(labels_N: np.ndarray, params_NP: np.ndarray, size: int) -> np.ndarray:
    """Pictures (N, size, size, 3) uint8 for the given labels and per-picture draws (``_draw_parameters``)."""
    p = params_NP[:, :_NUM_PARAMS].T.astype(np.float32)
    lattice_NGG = params_NP[:, _NUM_PARAMS:].reshape(-1, _LATTICE, _LATTICE).astype(np.float32)
    # background: a linear gradient between two muted colours of neighbouring hues, mottled in brightness
    hue_bg, dark_bg = p[0], p[1] < 0.5
    value_bg = np.where(dark_bg, 0.18 + 0.25 * p[2], 0.7 + 0.25 * p[2])
    col_a = _hsv_to_rgb(hue_bg, 0.25 + 0.35 * p[3], value_bg)
    col_b = _hsv_to_rgb(np.mod(hue_bg + 0.08, 1), 0.25 + 0.35 * p[3], 0.75 * value_bg + 0.1)
    # foreground: a saturated colour of a distant hue, bright on dark backgrounds and deeper on light ones
    hue_fg = np.mod(hue_bg + 0.3 + 0.4 * p[4], 1)
    value_fg = np.where(dark_bg, 0.85 + 0.15 * p[5], 0.45 + 0.25 * p[5])
    col_fg = _hsv_to_rgb(hue_fg, 0.65 + 0.35 * p[6], value_fg)

    xp, yp = _pixel_centres(size)[None, None, :], _pixel_centres(size)[None, :, None]
    grad = 2 * np.pi * p[11]
    t_NHW = np.clip(0.5 + 0.35 * (np.cos(grad)[:, None, None] * xp + np.sin(grad)[:, None, None] * yp), 0, 1)
    bg_NHW3 = col_a[:, None, None] + (col_b - col_a)[:, None, None] * t_NHW[..., None]
    mottle_NHW = (0.16 * p[13])[:, None, None] * (2 * _mottling(lattice_NGG, size) - 1)
    bg_NHW3 = bg_NHW3 + mottle_NHW[..., None]
    cx, cy, _ = _placement(p)
    shade_NHW = 1.08 - 0.12 * (xp - cx[:, None, None] + yp - cy[:, None, None])  # soft light from the top left
    fg_NHW3 = col_fg[:, None, None] * shade_NHW[..., None]
    img = bg_NHW3 + (fg_NHW3 - bg_NHW3) * _coverage(labels_N, p, size)[..., None]
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def builtin_images(n: int, size: int = 64, seed: int = 0, *, first: int = 0,
                   stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pictures ``first .. first + n - 1`` of stream ``stream``: (n, size, size, 3) uint8 and their labels (n,)
    int64 (indices into ``CLASS_NAMES``). Different streams of one seed are independent picture sets."""
    if n < 0 or size < 1 or first < 0 or stream < 0:
        raise ValueError(f"need n >= 0, size >= 1, first >= 0 and stream >= 0, got n={n}, size={size}, "
                         f"first={first}, stream={stream}")
    labels_N = np.arange(first, first + n, dtype=np.int64) % NUM_CLASSES
    params_NP = (np.stack([_draw_parameters(seed, first + i, stream) for i in range(n)]) if n
                 else np.zeros((0, _NUM_DRAWS)))
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        images[start:stop] = _render(labels_N[start:stop], params_NP[start:stop], size)
    return images, labels_N


def builtin_names(n: int) -> list[str]:
    """The relative file names of the first ``n`` pictures in the ImageFolder layout: ``class_name/00012.png``."""
    return [f"{CLASS_NAMES[i % NUM_CLASSES]}/{i:05d}.png" for i in range(n)]


def write_builtin_images(out_dir: str | Path, n: int, size: int = 64, seed: int = 0) -> list[Path]:
    """Write ``builtin_images(n, size, seed)`` as PNGs in the ImageFolder layout; returns the written paths."""
    out_dir = Path(out_dir)
    images, _ = builtin_images(n, size, seed)
    paths = [out_dir / name for name in builtin_names(n)]
    for path, img in zip(paths, images):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
    return paths
