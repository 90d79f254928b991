"""What the ``imagefolder serve`` page does, without gradio: load a model, sample, edit, reconstruct.

Every function takes and returns plain values (numpy pictures, ints, floats), so the page's behaviour is tested
without a browser or gradio. Pictures go out as (H, W, 3) uint8 arrays, enlarged by whole factors (nearest
neighbour) to at least ``DISPLAY_SIDE`` pixels so small models' pictures stay readable. Wrong input (no picture,
an unreadable or too large file, too many images) raises ``InputError`` with a message for the page.

Editing on the page: the user paints the region to redraw; ``keep_painted`` turns that around (paint what stays,
e.g. for out-painting). The picture and the painted mask are cropped to the model's square size alike, and the
generator keeps the picture's codes where the mask keeps at least half of a position's area, at every scale
(``models.editing``).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.images import ImageError, center_crop_arr, load_rgb, printable, to_tensor, to_uint8
from ..models.generator import Generator

DISPLAY_SIDE = 256


class InputError(ValueError):
    """A request the page cannot serve (no picture, an unreadable or oversized one, too many images)."""


@dataclass(frozen=True)
class Limits:
    max_images: int = 16      # pictures per request (sample and edit)
    max_side: int = 4096      # longest side of an uploaded picture, in pixels


@dataclass(frozen=True)
class Settings:
    """The sampling options of one request (``Generator.generate``'s; defaults: the paper's)."""
    cfg: float = 3.25
    cfg_schedule: str = "linear"
    top_k: int = 750
    top_p: float = 0.95
    temperature: float = 1.0
    seed: int = 0
    more_smooth: bool = False

    def check(self) -> None:
        if not (np.isfinite(self.cfg) and self.cfg >= 0):
            raise InputError(f"cfg must be a number >= 0, got {self.cfg}")
        if not 0.0 <= self.top_p <= 1.0:
            raise InputError(f"top-p must be in [0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InputError(f"top-k must be at least 0, got {self.top_k}")
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise InputError(f"temperature must be a number > 0, got {self.temperature}")


def display(imgs_B3HW: torch.Tensor) -> list[np.ndarray]:
    """Pictures in [-1, 1] as (H, W, 3) uint8, enlarged by a whole factor to at least DISPLAY_SIDE pixels."""
    factor = max(1, -(-DISPLAY_SIDE // imgs_B3HW.shape[-1]))
    big = torch.nn.functional.interpolate(imgs_B3HW.float().cpu(), scale_factor=factor, mode="nearest")
    return list(to_uint8(big).permute(0, 2, 3, 1).numpy())


def read_picture(path: str | Path | None, limits: Limits) -> np.ndarray:
    """An uploaded file as (H, W, 3) uint8; InputError when missing, unreadable or larger than the limit."""
    if path is None:
        raise InputError("upload a picture first")
    try:
        with Image.open(path) as img:
            size = img.size
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"the upload is not a picture this page can read ({printable(str(e))})") from None
    check_picture_size(size, limits)
    try:
        return np.asarray(load_rgb(path))
    except ImageError as e:
        raise InputError(f"the upload is not a picture this page can read ({e})") from None


def check_picture_size(size: tuple[int, int], limits: Limits) -> None:
    width, height = size
    if max(width, height) > limits.max_side:
        raise InputError(f"the picture is {width}x{height} pixels; this page takes at most {limits.max_side} a side")
    if min(width, height) < 1:
        raise InputError("the picture is empty")


def editor_inputs(value: dict | None, limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    """The picture (H, W, 3) uint8 and the painted region (H, W) bool from an image editor's value
    ({"background": (H, W, 3|4), "layers": [(H, W, 4), ...]}; painted = any layer not transparent there)."""
    background = None if value is None else value.get("background")
    if background is None or np.asarray(background).size == 0:
        raise InputError("upload or pick a picture first")
    picture = np.asarray(background)
    if picture.ndim == 2:
        picture = np.repeat(picture[..., None], 3, axis=2)
    if picture.ndim != 3 or picture.shape[2] not in (3, 4):
        raise InputError(f"the picture has an unexpected layout {picture.shape}")
    check_picture_size((picture.shape[1], picture.shape[0]), limits)
    painted = np.zeros(picture.shape[:2], dtype=bool)
    for layer in value.get("layers") or []:
        layer = np.asarray(layer)
        if layer.shape[:2] != painted.shape:
            raise InputError(f"a painted layer is {layer.shape[1]}x{layer.shape[0]} but the picture is "
                             f"{painted.shape[1]}x{painted.shape[0]}")
        painted |= layer[..., 3] > 0 if layer.ndim == 3 and layer.shape[2] == 4 else layer.reshape(
            *painted.shape, -1).any(axis=-1)
    return picture[..., :3].astype(np.uint8), painted


class ServeModel:
    """A generator (with its tokenizer) and its class names, served one request at a time."""

    def __init__(self, gen: Generator, class_names: list[str], limits: Limits = Limits(), source: str = "",
                 defaults: Settings = Settings()):
        if len(class_names) != gen.num_classes:
            raise ValueError(f"{len(class_names)} class names for a generator of {gen.num_classes} classes")
        self.gen, self.class_names, self.limits, self.source = gen.eval(), list(class_names), limits, source
        self.defaults = defaults  # what the page's controls start at
        self.size = gen.tokenizer.config.image_size
        self.scales = len(gen.patch_nums)
        self._lock = threading.Lock()  # the page's queue runs one request at a time; this guards direct callers too

    @property
    def device(self) -> torch.device:
        return self.gen.pos_1LC.device

    def choices(self) -> list[tuple[str, int]]:
        """(shown name, class id) for a class picker."""
        return [(f"{i}: {name}", i) for i, name in enumerate(self.class_names)]

    def _label(self, label) -> int:
        try:
            value = int(label)
        except (TypeError, ValueError):
            raise InputError(f"choose a class (got {label!r})") from None
        if not 0 <= value < self.gen.num_classes:
            raise InputError(f"class {value} is outside 0..{self.gen.num_classes - 1}")
        return value

    def _count(self, num) -> int:
        n = int(num)
        if not 1 <= n <= self.limits.max_images:
            raise InputError(f"the number of images must be in 1..{self.limits.max_images}, got {n}")
        return n

    def _generate(self, label: int, n: int, settings: Settings, **extra) -> tuple[torch.Tensor, list]:
        settings.check()
        labels = torch.full((n,), label, dtype=torch.long, device=self.device)
        with self._lock:
            return self.gen.generate(labels, cfg=settings.cfg, cfg_schedule=settings.cfg_schedule,
                                     top_k=settings.top_k, top_p=settings.top_p, temperature=settings.temperature,
                                     seed=int(settings.seed), more_smooth=settings.more_smooth,
                                     return_codes=True, **extra)

    def _scale_captions(self) -> list[str]:
        return [f"scale {k + 1}: {pn}x{pn}" for k, pn in enumerate(self.gen.patch_nums)]

    @torch.no_grad()
    def sample(self, label, num, settings: Settings) -> tuple[list[np.ndarray], list[tuple[np.ndarray, str]]]:
        """``num`` samples of class ``label`` (image i uses the stream (seed, i)) and the first one's picture after
        each scale (decoding the codes of scales 1..k)."""
        label, n = self._label(label), self._count(num)
        imgs, codes = self._generate(label, n, settings)
        first = [[c[:1] for c in branch] for branch in codes]
        with self._lock:
            steps = torch.cat([self.gen.tokenizer.decode([branch[:k] for branch in first])
                               for k in range(1, self.scales + 1)])
        return display(imgs), list(zip(display(steps), self._scale_captions()))

    def prepare(self, picture_HW3: np.ndarray, painted_HW: np.ndarray | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A picture cropped and resized to the model's size, (1, 3, S, S) in [-1, 1], and the painted mask cropped
        alike as (S, S) float in [0, 1]."""
        x = to_tensor(center_crop_arr(Image.fromarray(picture_HW3), self.size)).unsqueeze(0).to(self.device)
        if painted_HW is None:
            return x, None
        mask = Image.fromarray(painted_HW.astype(np.uint8) * 255, mode="L")
        return x, torch.from_numpy(center_crop_arr(mask, self.size).astype(np.float32) / 255.0)

    @torch.no_grad()
    def edit(self, picture_HW3: np.ndarray, painted_HW: np.ndarray, label, num, settings: Settings,
             keep_painted: bool = False) -> list[tuple[np.ndarray, str]]:
        """The picture as the model sees it, its reconstruction, the kept region, then ``num`` edits: the region
        kept (unpainted, or painted with ``keep_painted``) keeps the picture's codes at every scale, the rest is
        sampled as class ``label``."""
        label, n = self._label(label), self._count(num)
        x, painted = self.prepare(picture_HW3, painted_HW)
        keep = painted if keep_painted else 1.0 - painted
        with self._lock:
            codes = self.gen.tokenizer.encode(x)
            recon = self.gen.tokenizer.decode(codes)
        source = [[c.expand(n, -1) for c in branch] for branch in codes]
        imgs, _ = self._generate(label, n, settings, source=source, keep_mask=keep.to(self.device))
        picture = x.float()
        kept_view = (picture + 1) * (0.25 + 0.75 * (keep.to(self.device) >= 0.5).float()) - 1  # the rest darker
        shown = display(torch.cat([picture, recon.float(), kept_view, imgs]))
        captions = ["picture", "reconstruction", "kept (bright)"] + [f"edit {i + 1}" for i in range(n)]
        return list(zip(shown, captions))

    @torch.no_grad()
    def reconstruct(self, picture_HW3: np.ndarray) -> list[tuple[np.ndarray, str]]:
        """The picture as the model sees it, then its reconstruction after each scale."""
        x, _ = self.prepare(picture_HW3)
        with self._lock:
            steps = self.gen.tokenizer.reconstruct_per_scale(x)
        shown = display(torch.cat([x.float(), *(s.float() for s in steps)]))
        return list(zip(shown, ["picture", *self._scale_captions()]))

    def example_pictures(self, count: int = 4) -> list[np.ndarray]:
        """Built-in shapes pictures at the model's size, enlarged for the page (pictures to pick for editing)."""
        from ..data.builtin import builtin_images
        pictures, _ = builtin_images(count, self.size, seed=0, stream=1)
        return display(torch.stack([to_tensor(p) for p in pictures]))


def class_names(gen: Generator, spec: str | None, names_file: str | Path | None = None) -> list[str]:
    """Names of the generator's classes: one per line of ``names_file``; else the demo model's (its judge's, when
    ``spec`` is None); else the ``class_names`` our checkpoint's config.json records; else "class 0", "class 1"..."""
    n = gen.num_classes
    if names_file is not None:
        try:
            names = [line.strip() for line in Path(names_file).read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read the class names file {printable(str(names_file))} ({e})") from None
        if len(names) != n:
            raise InputError(f"{printable(str(names_file))} holds {len(names)} class names; the generator has {n} "
                             "classes (one name a line)")
        return names
    from ..checkpoint import is_our_checkpoint, read_config
    if spec is None:
        from ..demo.assets import CLASSIFIER, DEFAULT_ASSETS
        path = DEFAULT_ASSETS / CLASSIFIER
    else:
        path = Path(spec)
    recorded = read_config(path).get("class_names") if is_our_checkpoint(path) else None
    if isinstance(recorded, list) and len(recorded) == n:
        return [str(name) for name in recorded]
    return [f"class {i}" for i in range(n)]


def load_served_model(spec: str | None, *, tokenizer: str | None = None, names_file: str | Path | None = None,
                      device: torch.device | str = "cpu", limits: Limits = Limits()) -> ServeModel:
    """The generator ``spec`` (a checkpoint or preset, as ``load_generator`` takes), or the demo model shipped in
    the package when None, ready to serve."""
    from ..loading import load_generator
    if spec is None:
        from ..demo.assets import DEFAULT_ASSETS, GENERATOR, read_assets
        read_assets(DEFAULT_ASSETS)  # says how to make the demo model when it is missing
        gen = load_generator(DEFAULT_ASSETS / GENERATOR)
        from ..demo.recipes import SAMPLING  # the settings the demo measures its samples with
        source = "the demo model shipped in the package"
        defaults = Settings(**{k: SAMPLING[k] for k in ("cfg", "cfg_schedule", "top_k", "top_p", "seed")})
    else:
        gen = load_generator(spec, tokenizer=tokenizer)
        source, defaults = printable(str(spec)), Settings()
    gen = gen.to(device)
    return ServeModel(gen, class_names(gen, spec, names_file), limits, source, defaults)
