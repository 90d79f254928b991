"""A distributed, resumable sampler: epoch ``e`` visits a permutation drawn from ``(seed, e)``; process ``r`` of
``W`` takes every W-th index, the list padded (by repeating its start) so every process gets the same count.
``start_index`` skips what an interrupted epoch already consumed, so resuming continues the same order.
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, n: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.rank, self.world, self.seed, self.shuffle = n, rank, world_size, seed, shuffle
        self.epoch, self.start_index = 0, 0
        self.per_rank = math.ceil(n / world_size)

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        self.epoch, self.start_index = epoch, start_index

    def order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        total = self.per_rank * self.world
        idx = (idx * math.ceil(total / self.n))[:total]
        return idx[self.rank::self.world]

    def __iter__(self):
        return iter(self.order()[self.start_index:])

    def __len__(self) -> int:
        return self.per_rank - self.start_index
