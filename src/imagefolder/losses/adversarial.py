"""GAN losses for tokenizer training: discriminator / generator objectives, LeCam regularisation, the VQGAN adaptive
weight and the start-step gate.

Discriminator losses average the real and fake terms (``0.5 * (real + fake)``, the taming / LlamaGen convention):

* ``hinge``: ``0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))``; generator ``-mean(fake)``.
* ``non-saturating``: ``0.5 * (mean(softplus(-real)) + mean(softplus(fake)))``; generator ``mean(softplus(-fake))``.
* ``vanilla``: the same objective written as binary cross-entropy with logits (targets 1 for real, 0 for fake);
  generator: BCE of fake logits with target 1. Equal to ``non-saturating`` up to rounding.

Logits may have any shape (per image, per patch, per token); every term is a mean over all of them.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


_D_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "hinge": lambda real, fake: 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean()),
    "non-saturating": lambda real, fake: 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean()),
    "vanilla": lambda real, fake: 0.5 * (_bce(real, 1.0) + _bce(fake, 0.0)),
}

_G_LOSSES: dict[str, Callable[[Tensor], Tensor]] = {
    "hinge": lambda fake: -fake.mean(),
    "non-saturating": lambda fake: F.softplus(-fake).mean(),
    "vanilla": lambda fake: _bce(fake, 1.0),
}

GAN_LOSSES = tuple(_D_LOSSES)


def _check_kind(kind: str) -> None:
    if kind not in _D_LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; valid kinds: {', '.join(GAN_LOSSES)}")


def d_loss(kind: str, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Scalar discriminator loss of kind ``hinge``, ``non-saturating`` or ``vanilla``."""
    _check_kind(kind)
    return _D_LOSSES[kind](logits_real, logits_fake)


def g_loss(kind: str, logits_fake: Tensor) -> Tensor:
    """Scalar generator loss of kind ``hinge``, ``non-saturating`` or ``vanilla``."""
    _check_kind(kind)
    return _G_LOSSES[kind](logits_fake)


class LeCam(nn.Module):
    """LeCam regulariser (Tseng et al. 2021) for the discriminator.

    Holds exponential moving averages of the mean real and fake logits as buffers (so they travel in
    ``state_dict``). ``update(real, fake)`` advances them (the first update copies the batch means);
    ``forward(real, fake)`` returns ``mean(relu(real - ema_fake)^2) + mean(relu(ema_real - fake)^2)``.
    """

    ema_real: Tensor
    ema_fake: Tensor
    num_updates: Tensor

    def __init__(self, decay: float = 0.999):
        super().__init__()
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, logits_real: Tensor, logits_fake: Tensor) -> None:
        dtype = self.ema_real.dtype
        step = torch.where(self.num_updates > 0, 1 - self.decay, 1.0).to(dtype)  # a tensor: no host sync on GPU
        self.ema_real.lerp_(logits_real.detach().to(dtype).mean(), step)
        self.ema_fake.lerp_(logits_fake.detach().to(dtype).mean(), step)
        self.num_updates += 1

    def forward(self, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
        return (F.relu(logits_real - self.ema_fake).square().mean()
                + F.relu(self.ema_real - logits_fake).square().mean())


def adaptive_weight(nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """VQGAN's balance of the adversarial term: ||d nll / d W|| / (||d g / d W|| + 1e-4), clamped to
    [0, max_weight] and detached, with W the decoder's last layer weight. Keeps both graphs for backward."""
    nll_grad, = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)
    g_grad, = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    return (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()


def adopt_weight(weight: float, step: int, start: int) -> float:
    """``weight`` from step ``start`` on, 0 before (the discriminator / GAN-loss warm-up gate)."""
    return weight if step >= start else 0.0
