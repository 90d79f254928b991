"""Editing with a keep mask (``Generator.generate(source=, keep_mask=)``), the mask-to-scale rule, temperature."""
from __future__ import annotations

import pytest
import torch

from imagefolder.models.editing import scale_keep_masks


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for p in range(len(a)) for x, y in zip(a[p], b[p]))


def test_pixel_and_token_masks_map_to_each_scale_by_majority():
    left_half_hw = torch.zeros(64, 64)
    left_half_hw[:, :32] = 1
    masks = scale_keep_masks(left_half_hw, 2, (1, 2, 4), 64)
    assert [tuple(m.shape) for m in masks] == [(2, 1), (2, 4), (2, 16)]
    assert masks[0].all()  # half of the picture kept: the majority rule keeps the single coarse position
    assert masks[1][0].tolist() == [True, False, True, False]
    assert masks[2][0].view(4, 4).tolist() == [[True, True, False, False]] * 4
    token_grid = torch.zeros(4, 4, dtype=torch.bool)
    token_grid[0, 0] = True  # one position of 16: only the finest scale sees it
    masks = scale_keep_masks(token_grid, 1, (1, 2, 4), 64)
    assert not masks[0].any() and not masks[1].any() and masks[2].sum() == 1 and masks[2][0, 0]


def test_full_mask_gives_the_pictures_codes_and_reconstruction(tiny_generator, ref):
    gen, labels = tiny_generator, ref["labels"]
    real = gen.tokenizer.encode(ref["x"])
    for smooth in (False, True):
        img, codes = gen.generate(labels, seed=2, top_k=16, return_codes=True, source=real,
                                  keep_mask=torch.ones(64, 64, dtype=torch.bool), more_smooth=smooth)
        assert _same(codes, real)
        torch.testing.assert_close(img, gen.tokenizer.decode(real).float(), rtol=0, atol=1e-5)


def test_empty_mask_is_plain_sampling_with_the_same_seed(tiny_generator, ref):
    gen, labels = tiny_generator, ref["labels"]
    real = gen.tokenizer.encode(ref["x"])
    free_img, free = gen.generate(labels, seed=6, top_k=16, return_codes=True)
    img, codes = gen.generate(labels, seed=6, top_k=16, return_codes=True, source=real, keep_mask=torch.zeros(4, 4))
    assert _same(codes, free) and torch.equal(img, free_img)
    assert not _same(codes, real)


def test_kept_region_is_the_pictures_at_every_scale_and_the_rest_follows_it(tiny_generator, ref):
    gen, labels = tiny_generator, ref["labels"]
    real = gen.tokenizer.encode(ref["x"])
    keep_hw = torch.zeros(64, 64)
    keep_hw[:, :32] = 1.0  # keep the left half; image 1 also keeps the top rows
    keep_Bhw = keep_hw.repeat(2, 1, 1)
    keep_Bhw[1, :16] = 1.0
    _, codes = gen.generate(labels, seed=3, top_k=1, return_codes=True, source=real, keep_mask=keep_Bhw)
    masks = scale_keep_masks(keep_Bhw, 2, gen.patch_nums, 64)
    assert not torch.equal(masks[-1][0], masks[-1][1])
    # greedy draws: every free position is the best code given the merged (kept + drawn) codes before it
    guided = gen.guided_logits(labels, codes, cfg=3.25)
    redrawn = 0
    for p in range(gen.P):
        for si, keep_Bl in enumerate(masks):
            assert torch.equal(codes[p][si][keep_Bl], real[p][si][keep_Bl])
            best = guided[p][si].argmax(-1)
            assert torch.equal(codes[p][si][~keep_Bl], best[~keep_Bl])
            redrawn += int((codes[p][si] != real[p][si]).sum())
    assert redrawn > 0


def test_editing_keeps_per_image_seeds(tiny_generator, ref):
    gen, labels = tiny_generator, ref["labels"]
    real = gen.tokenizer.encode(ref["x"])
    keep_hw = torch.zeros(64, 64)
    keep_hw[32:] = 1.0
    both, codes = gen.generate(labels, seed=9, top_k=16, source=real, keep_mask=keep_hw, indices=[5, 6],
                               return_codes=True)
    for i in range(2):
        alone, codes1 = gen.generate(labels[i:i + 1], seed=9, top_k=16, indices=[5 + i], return_codes=True,
                                     source=[[c[i:i + 1] for c in b] for b in real], keep_mask=keep_hw)
        assert _same(codes1, [[c[i:i + 1] for c in b] for b in codes])
        torch.testing.assert_close(alone[0], both[i], rtol=0, atol=1e-5)  # batched matmuls round differently


def test_prefix_and_mask_together_keep_the_prefix_scales_whole(tiny_generator, ref):
    gen, labels = tiny_generator, ref["labels"]
    real = gen.tokenizer.encode(ref["x"])
    _, plain = gen.generate(labels, seed=1, top_k=16, return_codes=True, prefix=[c[:2] for c in real])
    _, both = gen.generate(labels, seed=1, top_k=16, return_codes=True, prefix=[c[:2] for c in real],
                           source=real, keep_mask=torch.zeros(64, 64))
    assert _same(both, plain)


def test_temperature_sharpens_and_one_changes_nothing(tiny_generator):
    gen, labels = tiny_generator, torch.tensor([1, 4])
    _, default = gen.generate(labels, seed=0, top_k=0, top_p=0.0, return_codes=True)
    _, one = gen.generate(labels, seed=0, top_k=0, top_p=0.0, return_codes=True, temperature=1.0)
    assert _same(one, default)
    _, greedy = gen.generate(labels, seed=0, top_k=1, return_codes=True)
    _, cold = gen.generate(labels, seed=0, top_k=0, top_p=0.0, return_codes=True, temperature=1e-6)
    assert _same(cold, greedy) and not _same(default, greedy)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            gen.generate(labels, temperature=bad)


@pytest.mark.parametrize("mask, words", [
    (torch.ones(5, 5), r"keep_mask must be \(H, W\) or \(B, H, W\) with H x W = 4x4 or 64x64"),
    (torch.ones(1, 1, 64, 64), r"got shape \(1, 1, 64, 64\)"),
    (torch.ones(3, 64, 64), "3 masks for 2 images"),
    (torch.full((64, 64), 2.0), r"values must be in \[0, 1\]"),
    (torch.full((4, 4), float("nan")), r"values must be in \[0, 1\]"),
    (torch.ones(4, 4, dtype=torch.int64), "bool or float"),
    ([[1.0]], "must be a tensor"),
])
def test_bad_masks_are_one_line_errors(tiny_generator, ref, mask, words):
    gen = tiny_generator
    real = gen.tokenizer.encode(ref["x"])
    with pytest.raises(ValueError, match=words) as e:
        gen.generate(ref["labels"], source=real, keep_mask=mask)
    assert "\n" not in str(e.value)


def test_editing_needs_a_whole_source_and_a_mask(tiny_generator, ref):
    gen, labels = tiny_generator, ref["labels"]
    real = gen.tokenizer.encode(ref["x"])
    with pytest.raises(ValueError, match="needs both source"):
        gen.generate(labels, source=real)
    with pytest.raises(ValueError, match="needs both source"):
        gen.generate(labels, keep_mask=torch.ones(4, 4))
    with pytest.raises(ValueError, match=r"source must give every branch the same number of scales \(all 4\)"):
        gen.generate(labels, source=[c[:2] for c in real], keep_mask=torch.ones(4, 4))
