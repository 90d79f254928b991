"""Image grids for looking at results: originals against reconstructions, and the per-scale progression.

Inputs are image batches ``(B, 3, H, W)`` in [-1, 1], the models' range; outputs are PIL images, written with
``save_png``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from .checkpoint import atomic_write
from .data.images import to_uint8

PADDING, BACKGROUND = 2, 1.0  # pixels between cells, and their colour (white, in [-1, 1])


def to_pil(x_3HW: torch.Tensor) -> Image.Image:
    """One image (3, H, W) in [-1, 1] -> 8-bit RGB."""
    return Image.fromarray(to_uint8(x_3HW).permute(1, 2, 0).cpu().numpy())


def save_png(img: Image.Image, path: str | Path) -> None:
    """Write ``img`` as PNG atomically (no half-written file under ``path``)."""
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def comparison_grid(originals_B3HW: torch.Tensor, recons_B3HW: torch.Tensor, per_row: int = 8) -> Image.Image:
    """Rows in pairs: up to ``per_row`` originals, then their reconstructions below them."""
    if originals_B3HW.shape != recons_B3HW.shape:
        raise ValueError(f"originals {tuple(originals_B3HW.shape)} and reconstructions {tuple(recons_B3HW.shape)} "
                         "differ in shape")
    B = originals_B3HW.shape[0]
    per_row = max(1, min(per_row, B))
    blank = torch.full_like(originals_B3HW[:1], BACKGROUND)
    cells = []
    for start in range(0, B, per_row):
        missing = per_row - min(per_row, B - start)
        for batch in (originals_B3HW, recons_B3HW):
            cells += [batch[start:start + per_row], blank.expand(missing, -1, -1, -1)]
    grid = make_grid(torch.cat(cells).float().cpu(), nrow=per_row, padding=PADDING, pad_value=BACKGROUND)
    return to_pil(grid)


def progression_grid(originals_B3HW: torch.Tensor, steps: Sequence[torch.Tensor],
                     labels: Sequence[str] | None = None) -> Image.Image:
    """One row per image: the original, then the reconstruction after each scale (``steps[k]``: (B, 3, H, W)).
    ``labels`` (one per column, K + 1) are written above the columns."""
    columns = [originals_B3HW, *steps]
    cells = torch.stack(columns, dim=1).flatten(0, 1)  # row-major: image 0's columns, then image 1's, ...
    grid = to_pil(make_grid(cells.float().cpu(), nrow=len(columns), padding=PADDING, pad_value=BACKGROUND))
    if labels is None:
        return grid
    if len(labels) != len(columns):
        raise ValueError(f"expected {len(columns)} column labels, got {len(labels)}")
    return add_column_labels(grid, labels, cell_width=originals_B3HW.shape[-1] + PADDING)


def add_column_labels(grid: Image.Image, labels: Sequence[str], cell_width: int) -> Image.Image:
    """``grid`` with a strip above it holding ``labels[i]`` centred over column ``i`` (columns ``cell_width`` apart,
    starting after one padding)."""
    font_size = max(8, min(20, cell_width // 5))
    font = ImageFont.load_default(size=font_size)  # a bitmap font where Pillow lacks FreeType: placed by its bbox
    height = round(font_size * 1.6)
    out = Image.new("RGB", (grid.width, grid.height + height), "white")
    out.paste(grid, (0, height))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(labels):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        centre = PADDING + i * cell_width + (cell_width - PADDING) / 2
        draw.text((centre - (right + left) / 2, (height - bottom - top) / 2), text, fill="black", font=font)
    return out
