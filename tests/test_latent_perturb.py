"""Latent perturbation (``latent_perturb``): near-miss codes in training, nothing changed in encoding."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imagefolder.config import ConfigError, TokenizerConfig
from imagefolder.models.quantizer import MultiScaleQuantizer


def _codes_from_fhat(f_hat_BCHW: torch.Tensor, table_VC: torch.Tensor) -> torch.Tensor:
    """The code of every position of a one-scale quantizer without phi (f_hat is the code vectors themselves)."""
    rows = f_hat_BCHW.permute(0, 2, 3, 1).reshape(-1, table_VC.shape[1])
    return torch.cdist(rows, table_VC).argmin(dim=1)


def _quantizer(perturb: float, topk: int) -> MultiScaleQuantizer:
    torch.manual_seed(0)
    q = MultiScaleQuantizer(32, 8, (6,), quant_resi=0.0, perturb=perturb, perturb_topk=topk)
    with torch.no_grad():
        q.embedding.weight.copy_(F.normalize(torch.randn(32, 8), dim=-1))
    return q


def test_perturbed_positions_take_one_of_their_next_nearest_codes_at_the_asked_share():
    f = torch.randn(64, 8, 6, 6)
    table = F.normalize(_quantizer(0.0, 2).embedding.weight.detach(), dim=-1)
    sims = F.normalize(f.permute(0, 2, 3, 1).reshape(-1, 8), dim=-1) @ table.T
    ranked = sims.argsort(dim=1, descending=True)
    nearest = ranked[:, 0]

    q = _quantizer(0.25, 4).train()
    torch.manual_seed(1)
    picked = _codes_from_fhat(q(f).f_hat.detach(), q.embedding.weight.detach())
    moved = picked != nearest
    assert 0.22 < moved.float().mean().item() < 0.28  # 2304 positions: the share asked for, within noise
    rank_of_pick = (ranked == picked[:, None]).float().argmax(dim=1)
    assert rank_of_pick[moved].min() >= 1 and rank_of_pick[moved].max() <= 3  # among the next 3 nearest
    assert set(rank_of_pick[moved].tolist()) == {1, 2, 3}

    # every position moved with perturb 1 and top-2: the second nearest code everywhere
    q2 = _quantizer(1.0, 2).train()
    assert torch.equal(_codes_from_fhat(q2(f).f_hat.detach(), q2.embedding.weight.detach()), ranked[:, 1])


def test_encoding_and_the_eval_forward_are_untouched_by_perturbation():
    f = torch.randn(8, 8, 6, 6)
    plain, perturbed = _quantizer(0.0, 8), _quantizer(1.0, 8)
    codes = plain.encode(f)
    assert all(torch.equal(a, b) for a, b in zip(codes, perturbed.encode(f)))
    perturbed.eval()
    assert torch.equal(perturbed(f).f_hat, plain.eval()(f).f_hat)


def test_a_perturbed_pattern_scale_tokenizer_trains_and_later_scales_correct_the_miss():
    torch.manual_seed(0)
    q = MultiScaleQuantizer(16, 4, (1, 2, 4), pattern_scales=1, perturb=1.0, perturb_topk=2).train()
    f = torch.randn(16, 4, 4, 4, requires_grad=True)
    out = q(f)
    (out.f_hat.square().mean() + out.vq_loss).backward()
    assert torch.isfinite(f.grad).all() and q.patterns[0].grad is not None
    # the pattern scale's code is the second nearest patch, and the finer scales quantize what it left
    rows = q._patch_rows(f.detach(), 0)
    second = torch.cdist(rows, q.patterns[0].detach()).argsort(dim=1)[:, 1]
    first = q.contribution(0, second.view(16, 1))
    with torch.no_grad():
        clean = q.encode(f.detach())
    assert not torch.equal(second, clean[0].flatten())
    assert (out.f_hat.detach() - f.detach()).square().mean() < (first - f.detach()).square().mean()


@pytest.mark.parametrize("key, value, message", [
    ("latent_perturb", 1.5, "latent_perturb must be in"),
    ("latent_perturb", -0.1, "latent_perturb must be in"),
    ("latent_perturb_topk", 1, "latent_perturb_topk must be in"),
    ("latent_perturb_topk", 10_000, "latent_perturb_topk must be in"),
])
def test_bad_perturbation_settings_are_refused_by_name(key, value, message):
    with pytest.raises(ConfigError, match=message):
        TokenizerConfig(**{key: value})
