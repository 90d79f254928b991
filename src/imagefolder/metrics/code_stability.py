"""Code stability: how many of a tokenizer's codes change when invisible noise is added to the picture.

A generator predicts codes, so codes that are a function of what the picture shows are easier to predict than codes
that flip with noise no one can see. ``code_flip_rate`` adds Gaussian noise of standard deviation ``sigma`` (in
8-bit steps: 1.0 is one grey level, invisible) to images in [-1, 1] and reports, per branch and scale, the share of
codes that differ from those of the clean picture.
"""
from __future__ import annotations

import torch

from ..models.tokenizer import Tokenizer


@torch.no_grad()
def code_flip_rate(tok: Tokenizer, x_B3HW: torch.Tensor, sigma_8bit: float = 1.0, seed: int = 0,
                   batch: int = 64) -> list[list[float]]:
    """[branch][scale]: the share of codes that change under N(0, sigma) noise (sigma in 8-bit grey levels)."""
    device = next(tok.parameters()).device
    g = torch.Generator().manual_seed(seed)
    P, K = tok.num_branches, len(tok.v_patch_nums)
    changed = torch.zeros(P, K, dtype=torch.float64)
    total = torch.zeros(K, dtype=torch.float64)
    for start in range(0, len(x_B3HW), batch):
        x = x_B3HW[start:start + batch]
        noisy = x + torch.randn(x.shape, generator=g) * (2.0 * sigma_8bit / 255.0)  # [-1, 1] spans 255 levels
        clean, moved = tok.encode(x.to(device)), tok.encode(noisy.to(device))
        for si in range(K):
            total[si] += clean[0][si].numel()
            for p in range(P):
                changed[p, si] += (clean[p][si] != moved[p][si]).sum().item()
    return (changed / total).tolist()
