"""Optimiser pieces shared by both stages: AdamW parameter groups, the learning-rate schedule, EMA weights.

The schedule is a pure function of the step (nothing to save besides the step): linear warm-up from 0, then
``constant``, ``cosine`` or ``linear`` decay to ``final_lr_ratio * lr`` at the last step (``none``: constant, no
warm-up).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn

_NO_DECAY_WORDS = ("pos_", "pos_embed", "cls_token", "latent_tokens", "mask_token", "lvl_embed", "class_emb",
                   "empty_emb", "embedding", "start", "level_embed", "scale_mul")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into decayed (matrices) and not decayed (norms, biases, embeddings, tables)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or any(w in name for w in _NO_DECAY_WORDS):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def adamw(params: Iterable, lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.AdamW:
    """AdamW; the fused CUDA kernel on GPU, the default (foreach) implementation elsewhere."""
    return torch.optim.AdamW(params, lr=lr, betas=betas, fused=device.type == "cuda")


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str, final_ratio: float) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based)."""
    if kind == "none":
        return 1.0
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0) / span, 1.0)
    if kind == "cosine":
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    if kind == "linear":
        return 1 - (1 - final_ratio) * t
    raise ValueError(f"unknown lr schedule {kind!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


class EMA:
    """Exponential moving average of a model's floating-point state (parameters and buffers), kept in float32.

    The average warms up as ``min(decay, (1 + n) / (10 + n))`` over the first updates, so early EMA weights are
    not dominated by the initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach().float(), 1 - d)

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (same architecture)."""
        state = model.state_dict()
        model.load_state_dict({k: (self.shadow[k].to(v.dtype) if k in self.shadow else v) for k, v in state.items()})

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state misses {sorted(missing)[:5]}")
        self.shadow = {k: state["shadow"][k].float().clone() for k in self.shadow}
