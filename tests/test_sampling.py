"""Sampling helpers: guidance schedule, top-k / top-p filtering, inverse-CDF draws, per-image seeds."""
from __future__ import annotations

import pytest
import torch

from imagefolder.models.sampling import (PerImageRNG, cfg_weight, filter_top_k_top_p, image_seed, sample_branches,
                                         sample_from_probs)


def test_cfg_schedules():
    assert [cfg_weight(3.0, si, 4) for si in range(4)] == [0.0, 1.0, 2.0, 3.0]
    assert [cfg_weight(3.0, si, 4, "constant") for si in range(4)] == [3.0] * 4
    with pytest.raises(ValueError):
        cfg_weight(1.0, 0, 4, "cosine")


def test_top_k_keeps_k_best():
    logits = torch.tensor([[[0.0, 3.0, 1.0, 2.0, -1.0]]])
    out = filter_top_k_top_p(logits, top_k=2)
    assert torch.isfinite(out).tolist() == [[[False, True, False, True, False]]]
    assert torch.equal(out[torch.isfinite(out)], logits[torch.isfinite(out)])
    assert torch.equal(filter_top_k_top_p(logits, top_k=0), logits)  # 0 disables


def test_top_p_keeps_smallest_nucleus():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().view(1, 1, 4)
    keep = torch.isfinite(filter_top_k_top_p(logits, top_p=0.75)).flatten().tolist()
    assert keep == [True, True, False, False]
    keep = torch.isfinite(filter_top_k_top_p(logits, top_p=0.85)).flatten().tolist()
    assert keep == [True, True, True, False]
    keep = torch.isfinite(filter_top_k_top_p(logits, top_p=0.1)).flatten().tolist()
    assert keep == [True, False, False, False]  # always at least the best


def test_inverse_cdf_draw_follows_the_distribution():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3]).view(1, 1, 4).expand(1, 20000, 4)
    u = torch.rand(1, 20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    idx = sample_from_probs(probs, u)
    freq = torch.bincount(idx.flatten(), minlength=4).double() / 20000
    assert freq[1] == 0  # a zero-probability code is never drawn
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.0, 0.6, 0.3], dtype=torch.float64), atol=0.015, rtol=0)


def test_joint_draw_has_the_product_distribution():
    p0 = torch.tensor([0.7, 0.2, 0.1]).log()
    p1 = torch.tensor([0.25, 0.25, 0.5]).log()
    n = 30000
    lg = [p.view(1, 1, 3).expand(1, n, 3) for p in (p0, p1)]
    u = torch.rand(1, 2, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, b = sample_branches(lg, u, joint=True)
    joint = torch.zeros(3, 3, dtype=torch.float64)
    joint.index_put_((a.flatten(), b.flatten()), torch.ones(n, dtype=torch.float64), accumulate=True)
    want = torch.outer(p0.exp(), p1.exp()).double()
    torch.testing.assert_close(joint / n, want, atol=0.012, rtol=0)


def test_per_image_streams_do_not_depend_on_the_batch():
    together = PerImageRNG(7, [0, 1, 2]).uniform(2, 5)
    alone = PerImageRNG(7, [1]).uniform(2, 5)
    assert torch.equal(together[1], alone[0])
    assert image_seed(7, 1) != image_seed(7, 2) != image_seed(8, 1)
    assert 0 <= image_seed(123, 456) < 2**63
