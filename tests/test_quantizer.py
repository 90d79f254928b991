"""Invariants of the multi-scale residual quantizer."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imagefolder.models.quantizer import MultiScaleQuantizer, PhiSchedule

SCALES = (1, 2, 3, 3, 5)


@pytest.fixture
def quantizer():
    torch.manual_seed(0)
    q = MultiScaleQuantizer(32, 8, SCALES, share_quant_resi=4, quant_resi=0.5)
    with torch.no_grad():  # spread the codebook so lookups are not all ties
        q.embedding.weight.normal_()
    return q


def test_cosine_lookup_picks_most_similar_code(quantizer):
    z = torch.randn(50, 8)
    idx = quantizer.lookup(z)
    sims = F.cosine_similarity(z[:, None, :], quantizer.embedding.weight[None, :, :], dim=-1)
    assert torch.equal(idx, sims.argmax(dim=1))
    # scale invariance: cosine lookup ignores the length of the query
    assert torch.equal(quantizer.lookup(z * 7.5), idx)


def test_sum_of_scale_contributions_is_fhat(quantizer):
    f = torch.randn(3, 8, 5, 5)
    codes, fhats = quantizer.encode(f, return_fhats=True)
    assert [c.shape for c in codes] == [(3, pn * pn) for pn in SCALES]
    total = sum(quantizer.contribution(si, c) for si, c in enumerate(codes))
    torch.testing.assert_close(total, fhats[-1], rtol=0, atol=1e-5)
    # cumulative: each f_hat adds exactly the next contribution
    for si in range(1, len(SCALES)):
        torch.testing.assert_close(fhats[si] - fhats[si - 1], quantizer.contribution(si, codes[si]), rtol=0, atol=1e-5)
    torch.testing.assert_close(quantizer.codes_to_fhats(codes)[-1], fhats[-1], rtol=0, atol=1e-6)


def test_more_scales_reduce_the_residual(quantizer):
    f = torch.randn(4, 8, 5, 5)
    _, fhats = quantizer.encode(f, return_fhats=True)
    errs = [(f - fh).square().mean().item() for fh in fhats]
    assert errs[-1] < errs[0]


def test_training_forward_values_equal_encode_and_gradient_is_straight_through(quantizer):
    f = torch.randn(2, 8, 5, 5, requires_grad=True)
    out = quantizer(f)
    _, fhats = quantizer.encode(f.detach(), return_fhats=True)
    torch.testing.assert_close(out.f_hat, fhats[-1], rtol=0, atol=1e-5)
    g = torch.randn_like(out.f_hat)
    (out.f_hat * g).sum().backward()
    torch.testing.assert_close(f.grad, g)  # identity Jacobian: the straight-through estimator
    assert out.hits_KV.shape == (len(SCALES), 32)
    assert out.hits_KV.sum(dim=1).tolist() == [2.0 * pn * pn for pn in SCALES]


def test_vq_loss_trains_codebook_phi_and_commits_the_input(quantizer):
    f = torch.randn(2, 8, 5, 5, requires_grad=True)
    out = quantizer(f)
    out.vq_loss.backward()
    assert quantizer.embedding.weight.grad.abs().sum() > 0
    assert quantizer.quant_resi.qresi_ls[0].weight.grad.abs().sum() > 0
    assert f.grad.abs().sum() > 0  # the beta-weighted commitment term


def test_dropout_keeps_exactly_the_chosen_prefix(quantizer):
    f = torch.randn(4, 8, 5, 5)
    n_keep = torch.tensor([1, 3, 5, 5])
    out = quantizer(f, n_keep)
    _, fhats = quantizer.encode(f, return_fhats=True)
    for b, k in enumerate(n_keep.tolist()):
        torch.testing.assert_close(out.f_hat[b], fhats[k - 1][b], rtol=0, atol=1e-5)


def test_var_input_is_downsampled_cumulative_fhat(quantizer):
    f = torch.randn(2, 8, 5, 5)
    codes, fhats = quantizer.encode(f, return_fhats=True)
    x = quantizer.var_input(codes)
    assert x.shape == (2, sum(pn * pn for pn in SCALES[1:]), 8)
    start = 0
    for si in range(len(SCALES) - 1):
        pn = SCALES[si + 1]
        want = F.interpolate(fhats[si], size=(pn, pn), mode="area").flatten(2).transpose(1, 2)
        torch.testing.assert_close(x[:, start:start + pn * pn], want, rtol=0, atol=1e-5)
        start += pn * pn


def test_phi_schedule_matches_official_ticks():
    sched = PhiSchedule(4, 4, 0.5)
    # 10 scales, 4 shared convs at ticks linspace(1/12, 11/12, 4)
    # scales 2 and 7 sit exactly between two ticks; numpy rounding (the official arithmetic) breaks the ties
    assert [sched.index(si, 10) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert [PhiSchedule(4, 1, 0.5).index(si, 10) for si in range(10)] == [0] * 10
    assert PhiSchedule(4, 2, 0.0).qresi_ls[0].__class__.__name__ == "Identity"


def test_recent_usage_counts_codes_in_use(quantizer):
    from imagefolder.metrics.codebook import recent_usage
    hits = torch.zeros(len(SCALES), 32)
    hits[:, :8] = 10.0
    hits[:, 8] = 0.05  # below 8% of uniform use (80 / 32 * 0.08 = 0.2): not in use
    quantizer.update_usage(hits)
    assert recent_usage(quantizer.ema_vocab_hit_SV).tolist() == [0.25] * len(SCALES)


def test_bad_shapes_are_clear_errors(quantizer):
    with pytest.raises(ValueError, match="expects"):
        quantizer.encode(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="scale 1"):
        quantizer.codes_to_fhats([torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)])


def test_loss_terms_follow_the_official_formula(quantizer):
    """Per kept scale: beta * mse(sg(f_hat), f) + mse(f_hat, sg(f)), averaged over the samples keeping it, then
    over scales (here without dropout, so both are plain means)."""
    f = torch.randn(2, 8, 5, 5)
    out = quantizer(f)
    _, fhats = quantizer.encode(f, return_fhats=True)
    mse = torch.stack([(fh - f).square().mean() for fh in fhats]).mean()
    torch.testing.assert_close(out.commit_loss, quantizer.beta * mse, rtol=1e-5, atol=0)
    torch.testing.assert_close(out.codebook_loss, mse, rtol=1e-5, atol=0)
    torch.testing.assert_close(out.vq_loss, (1 + quantizer.beta) * mse, rtol=1e-5, atol=0)
