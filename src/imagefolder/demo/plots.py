"""Pictures for the demo report, drawn with PIL alone: labelled image grids and small line plots of training curves.

Grids take image batches ``(B, 3, H, W)`` in [-1, 1] and upscale small images (nearest neighbour) so a 32 px
picture stays visible in a report. A curve is a list of (step, value) points; each panel holds one curve with its
own value range.

Glossary: ``N`` images, ``B`` batch, ``H W`` image size.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from ..viz import PADDING, add_column_labels, to_pil

MIN_CELL = 64                     # images are upscaled to at least this many pixels
PANEL_W, PANEL_H, MARGIN = 300, 170, 8
PLOT_LEFT, PLOT_BOTTOM, PLOT_TOP = 48, 22, 24   # room for value labels, step labels and the title
LINE_COLOUR = (31, 119, 180)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _upscaled(grid: Image.Image, scale: int) -> Image.Image:
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST) if scale > 1 else grid


def _scale_for(x_B3HW: torch.Tensor) -> int:
    return max(1, MIN_CELL // x_B3HW.shape[-1])


def add_row_labels(grid: Image.Image, labels: Sequence[str], cell_height: int, top: int = 0) -> Image.Image:
    """``grid`` with a strip on its left holding ``labels[i]`` level with row ``i`` (rows ``cell_height`` apart,
    starting ``top`` pixels down)."""
    font = _font(max(10, min(18, cell_height // 4)))
    draw = ImageDraw.Draw(grid)
    width = max(draw.textbbox((0, 0), text, font=font)[2] for text in labels) + 2 * MARGIN
    out = Image.new("RGB", (grid.width + width, grid.height), "white")
    out.paste(grid, (width, 0))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(labels):
        left, upper, right, lower = draw.textbbox((0, 0), text, font=font)
        centre = top + i * cell_height + cell_height / 2
        draw.text((width - MARGIN - right, centre - (lower + upper) / 2), text, fill="black", font=font)
    return out


def samples_grid(samples_N3HW: torch.Tensor, labels_N: torch.Tensor, class_names: Sequence[str],
                 per_row: int) -> Image.Image:
    """One row per class: its first ``per_row`` samples, the class name on the left."""
    rows = [samples_N3HW[labels_N == c][:per_row] for c in range(len(class_names))]
    width = max(len(r) for r in rows)
    blank = torch.ones(1, *samples_N3HW.shape[1:])
    cells = torch.cat([torch.cat([r, blank.expand(width - len(r), -1, -1, -1)]) for r in rows])
    scale = _scale_for(samples_N3HW)
    grid = _upscaled(to_pil(make_grid(cells.float(), nrow=width, padding=PADDING, pad_value=1.0)), scale)
    return add_row_labels(grid, class_names, (samples_N3HW.shape[-2] + PADDING) * scale, top=PADDING * scale // 2)


def progression_figure(originals_B3HW: torch.Tensor, steps: Sequence[torch.Tensor], column_labels: Sequence[str],
                       row_labels: Sequence[str]) -> Image.Image:
    """Per row: a validation image, then one image per entry of ``steps`` (e.g. its reconstruction from the first
    1, 2, ..., K scales), the columns titled ``column_labels``."""
    columns = [originals_B3HW, *steps]
    cells = torch.stack(columns, dim=1).flatten(0, 1)
    scale = _scale_for(originals_B3HW)
    grid = _upscaled(to_pil(make_grid(cells.float(), nrow=len(columns), padding=PADDING, pad_value=1.0)), scale)
    cell = (originals_B3HW.shape[-1] + PADDING) * scale
    plain_height = grid.height
    grid = add_column_labels(grid, ["original", *column_labels], cell_width=cell)
    return add_row_labels(grid, row_labels, cell, top=grid.height - plain_height + PADDING * scale // 2)


@dataclass
class Curve:
    title: str
    points: list[tuple[float, float]]   # (step, value)
    unit: str = "step"                  # what the horizontal axis counts


def read_curve(metrics_jsonl: Path, key: str, title: str, split: str = "train") -> Curve:
    """The ``key`` values of a trainer's ``metrics.jsonl`` rows of ``split``."""
    points = []
    if metrics_jsonl.is_file():
        for line in metrics_jsonl.read_text().splitlines():
            row = json.loads(line)
            if row.get("split") == split and key in row and math.isfinite(row[key]):
                points.append((float(row["step"]), float(row[key])))
    return Curve(title, points)


def _panel(curve: Curve) -> Image.Image:
    img = Image.new("RGB", (PANEL_W, PANEL_H), "white")
    draw = ImageDraw.Draw(img)
    small, big = _font(10), _font(12)
    draw.text((PLOT_LEFT, 4), curve.title, fill="black", font=big)
    x0, y0, x1, y1 = PLOT_LEFT, PLOT_TOP, PANEL_W - MARGIN, PANEL_H - PLOT_BOTTOM
    draw.rectangle((x0, y0, x1, y1), outline=(150, 150, 150))
    steps, values = [p[0] for p in curve.points], [p[1] for p in curve.points]
    s_lo, s_hi = min(steps), max(steps)
    v_lo, v_hi = min(values), max(values)
    if v_hi - v_lo < 1e-12:
        v_lo, v_hi = v_lo - 0.5, v_hi + 0.5

    def xy(step: float, value: float) -> tuple[float, float]:
        fx = 0.5 if s_hi == s_lo else (step - s_lo) / (s_hi - s_lo)
        return x0 + 4 + fx * (x1 - x0 - 8), y1 - 4 - (value - v_lo) / (v_hi - v_lo) * (y1 - y0 - 8)

    for value, y in ((v_hi, y0 + 4), (v_lo, y1 - 4)):
        text = f"{value:.3g}"
        draw.text((x0 - 4 - draw.textbbox((0, 0), text, font=small)[2], y - 6), text, fill="black", font=small)
    for step, anchor in ((s_lo, x0), (s_hi, x1)):
        text = f"{step:g}" if anchor == x0 else f"{curve.unit} {step:g}"
        w = draw.textbbox((0, 0), text, font=small)[2]
        draw.text((anchor if anchor == x0 else anchor - w, y1 + 4), text, fill="black", font=small)
    pts = [xy(s, v) for s, v in curve.points]
    if len(pts) > 1:
        draw.line(pts, fill=LINE_COLOUR, width=2)
    if len(pts) <= 20:  # few points: mark each
        for x, y in pts:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=LINE_COLOUR)
    return img


def curves_figure(curves: Sequence[Curve], columns: int = 3) -> Image.Image | None:
    """Panels of the curves that have points, ``columns`` per row; None when none has any."""
    panels = [_panel(c) for c in curves if c.points]
    if not panels:
        return None
    rows = math.ceil(len(panels) / columns)
    width = min(columns, len(panels))
    out = Image.new("RGB", (width * PANEL_W, rows * PANEL_H), "white")
    for i, panel in enumerate(panels):
        out.paste(panel, ((i % columns) * PANEL_W, (i // columns) * PANEL_H))
    return out
