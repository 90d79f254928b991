"""Codebook usage: how much of each codebook a tokenizer's codes use.

Two distinct numbers, each defined here once:

* ``CodeCounts.usage`` (**codebook usage**, what validation, the demo and the ablation report): over a set of
  images, per branch and scale, the share of the codebook's entries that at least one code of the set picks.
  ``usage_finest`` is its mean over the branches at the finest scale.
* ``recent_usage`` (**recent usage**, logged during tokenizer training as ``recent_usage_finest``): the authors'
  running statistic over training batches: per scale, the share of entries whose exponential moving average of
  hits (``MultiScaleQuantizer.ema_vocab_hit_SV``) is at least 8% of what uniform use would give.

Glossary: ``P`` branches, ``K`` scales, ``V`` codebook size.
"""
from __future__ import annotations

import torch

RECENT_MARGIN = 0.08  # of uniform use: below it an entry counts as unused (the official vocab-usage margin)


class CodeCounts:
    """How often each entry of each branch's codebook was picked at each scale, over the codes added."""

    def __init__(self, branches: int, scales: int, codebook_size: int, device: torch.device | str = "cpu"):
        self.hits_PKV = torch.zeros(branches, scales, codebook_size, dtype=torch.float64, device=device)

    def add(self, codes: list[list[torch.Tensor]]) -> None:
        """Codes ``[branch][scale]`` of a batch, as ``Tokenizer.encode`` returns them."""
        V = self.hits_PKV.shape[-1]
        for p, branch in enumerate(codes):
            for si, idx in enumerate(branch):
                self.hits_PKV[p, si] += torch.bincount(idx.flatten(), minlength=V).to(self.hits_PKV)

    def usage(self) -> torch.Tensor:
        """(P, K): the share of each codebook picked at least once at each scale."""
        return (self.hits_PKV > 0).double().mean(dim=-1)

    def usage_finest(self) -> float:
        """Codebook usage at the finest scale, averaged over the branches."""
        return float(self.usage()[:, -1].mean())


@torch.no_grad()
def recent_usage(ema_hits_KV: torch.Tensor) -> torch.Tensor:
    """(K,): per scale, the share of entries whose hit EMA is at least ``RECENT_MARGIN`` of uniform use."""
    total_K1 = ema_hits_KV.sum(dim=1, keepdim=True)
    used = (ema_hits_KV >= total_K1 / ema_hits_KV.shape[1] * RECENT_MARGIN) & (total_K1 > 0)
    return used.double().mean(dim=1)
