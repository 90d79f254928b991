"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of discriminator inputs in [-1, 1].

Policies, applied in the order given, each with its own random draw per image:

* ``color``: brightness shift in [-0.5, 0.5), saturation factor in [0, 2), contrast factor in [0.5, 1.5);
* ``translation``: integer shift of up to 1/8 of the side in each direction, zeros shifted in;
* ``cutout``: zeroes a square of half the side (sides rounded) centred anywhere in the image.

Every operation is differentiable in the pixels, so generator gradients pass through the augmentation. Real and
fake batches are augmented independently (separate calls draw separate transforms).

Glossary: ``B`` batch, ``C`` channels, ``H W`` image height and width.
"""
from __future__ import annotations

from typing import Callable

import torch

Tensor = torch.Tensor
DEFAULT_POLICY = "color,translation,cutout"


def _uniform(x_BCHW: Tensor, generator: torch.Generator | None) -> Tensor:
    """(B, 1, 1, 1) uniforms in [0, 1) in the dtype and on the device of ``x``."""
    return torch.rand(x_BCHW.shape[0], 1, 1, 1, dtype=x_BCHW.dtype, device=x_BCHW.device, generator=generator)


def _shift_range(low: int, high: int, B: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """(B, 1, 1) integers in [low, high]."""
    return torch.randint(low, high + 1, (B, 1, 1), device=device, generator=generator)


def color(x_BCHW: Tensor, generator: torch.Generator | None = None) -> Tensor:
    x = x_BCHW + (_uniform(x_BCHW, generator) - 0.5)
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * (2 * _uniform(x, generator)) + gray
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x, generator) + 0.5) + mean


def translation(x_BCHW: Tensor, generator: torch.Generator | None = None, ratio: float = 0.125) -> Tensor:
    B, C, H, W = x_BCHW.shape
    sy, sx = int(H * ratio + 0.5), int(W * ratio + 0.5)
    dy = _shift_range(-sy, sy, B, x_BCHW.device, generator)
    dx = _shift_range(-sx, sx, B, x_BCHW.device, generator)
    rows = torch.arange(H, device=x_BCHW.device).view(1, H, 1) - dy          # output (i, j) reads (i - dy, j - dx)
    cols = torch.arange(W, device=x_BCHW.device).view(1, 1, W) - dx
    inside_BHW = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
    index = (rows.clamp(0, H - 1) * W + cols.clamp(0, W - 1)).view(B, 1, H * W).expand(B, C, H * W)
    moved = x_BCHW.flatten(2).gather(2, index).view(B, C, H, W)
    return moved * inside_BHW.unsqueeze(1).to(moved.dtype)


def cutout(x_BCHW: Tensor, generator: torch.Generator | None = None, ratio: float = 0.5) -> Tensor:
    B, C, H, W = x_BCHW.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    top = _shift_range(-(ch // 2), H - 1 - ch // 2, B, x_BCHW.device, generator)
    left = _shift_range(-(cw // 2), W - 1 - cw // 2, B, x_BCHW.device, generator)
    rows = torch.arange(H, device=x_BCHW.device).view(1, H, 1) - top
    cols = torch.arange(W, device=x_BCHW.device).view(1, 1, W) - left
    hole_BHW = (rows >= 0) & (rows < ch) & (cols >= 0) & (cols < cw)
    return x_BCHW * (~hole_BHW).unsqueeze(1).to(x_BCHW.dtype)


POLICIES: dict[str, Callable[[Tensor, torch.Generator | None], Tensor]] = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
}


def diff_augment(x_BCHW: Tensor, policy: str = DEFAULT_POLICY, generator: torch.Generator | None = None) -> Tensor:
    """Apply the comma-separated ``policy`` (empty: identity). ``generator`` must live on ``x``'s device."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policies {unknown}; valid: {', '.join(POLICIES)}")
    for name in names:
        x_BCHW = POLICIES[name](x_BCHW, generator)
    return x_BCHW
