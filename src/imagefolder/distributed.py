"""Process-group helpers for scripts, commands and trainers (models never use them; a trainer hands them the
collectives they need, e.g. ``gather_with_grad`` for the contrastive loss over the global batch).

``init_from_env`` joins the process group when launched by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK set) with
NCCL on CUDA devices and gloo otherwise, and is a plain single process when not. The other helpers work in both
cases (a single process is rank 0 of 1).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(choice: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the process's CUDA device when there is one, else the CPU. Raises RuntimeError for an unavailable
    ``cuda``."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA was requested but is not available on this machine")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(choice)


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if there is one; return this process's rank, world size and device.

    ``device``: ``auto``, ``cpu`` or ``cuda`` (then ``cuda:LOCAL_RANK``); the backend follows it (nccl / gloo).
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(0, 1, 0, pick_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, dev)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """Rank 0, or the only process."""
    return not _active() or dist.get_rank() == 0


def barrier() -> None:
    if _active():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` for a single process."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``t`` over the processes in place (``op``: sum, min or max); returns it (as is for one process)."""
    if _active():
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return t


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """All processes' ``t`` concatenated on dim 0, differentiable (the identity for one process). The processes'
    lengths may differ (a batch that lost unreadable files): each is padded to the longest for the collective,
    which needs equal shapes, and cut back after it."""
    if not _active():
        return t
    from torch.distributed.nn.functional import all_gather
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    longest = max(sizes)
    if t.shape[0] < longest:
        t = torch.cat((t, t.new_zeros(longest - t.shape[0], *t.shape[1:])))
    return torch.cat([part[:size] for part, size in zip(all_gather(t), sizes)], dim=0)


def broadcast_buffers_(module: nn.Module) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every process."""
    if _active():
        for b in module.buffers():
            dist.broadcast(b, 0)


def shutdown() -> None:
    if _active():
        dist.destroy_process_group()
