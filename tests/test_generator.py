"""The VAR generator: mask, KV cache, guidance, sampling determinism, our checkpoint format."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from timm.layers import DropPath

import imagefolder as imf
from imagefolder.models.generator import block_causal_mask


def test_mask_lets_each_scale_see_itself_and_earlier_scales_only():
    patch_nums = (1, 2, 3)
    mask = block_causal_mask(patch_nums)[0, 0]
    scale_of = [0] + [1] * 4 + [2] * 9
    for q in range(14):
        for k in range(14):
            assert (mask[q, k] == 0) == (scale_of[k] <= scale_of[q]), (q, k)


def test_teacher_forcing_is_causal_over_scales(tiny_generator, ref):
    """Changing the codes of the last scale does not change any logits (they only feed later scales), and
    changing the codes of scale 1 changes logits of scales 2.. but not of scales 0..1."""
    gen = tiny_generator
    codes = gen.tokenizer.encode(ref["x"])
    with torch.no_grad():
        base = gen(ref["labels"], codes)
        last = [c[:3] + [(c[3] + 1) % 64] for c in codes]
        torch.testing.assert_close(gen(ref["labels"], last), base, rtol=0, atol=0)
        mid = [[c[0], (c[1] + 1) % 64, c[2], c[3]] for c in codes]
        changed = gen(ref["labels"], mid)
    torch.testing.assert_close(changed[:, :5], base[:, :5], rtol=0, atol=0)
    assert not torch.allclose(changed[:, 5:], base[:, 5:])


def test_kv_cached_logits_equal_full_forward(tiny_generator, ref):
    gen = tiny_generator
    codes = gen.tokenizer.encode(ref["x"])
    with torch.no_grad():
        full = gen(ref["labels"], codes)
    cached = gen.guided_logits(ref["labels"], codes, cfg=0.0)
    incremental = torch.cat([torch.cat([cached[p][si] for p in range(2)], dim=-1) for si in range(4)], dim=1)
    torch.testing.assert_close(incremental, full, rtol=0, atol=1e-5)


def test_guidance_mixes_conditional_and_unconditional(tiny_generator, ref):
    gen = tiny_generator
    codes = gen.tokenizer.encode(ref["x"])
    uncond = torch.full_like(ref["labels"], gen.num_classes)
    with torch.no_grad():
        c = gen(ref["labels"], codes)
        u = gen(uncond, codes)
    guided = gen.guided_logits(ref["labels"], codes, cfg=2.0, cfg_schedule="constant")
    flat = torch.cat([torch.cat([guided[p][si] for p in range(2)], dim=-1) for si in range(4)], dim=1)
    torch.testing.assert_close(flat, 3 * c - 2 * u, rtol=0, atol=5e-5)


def test_top_k_one_is_argmax(tiny_generator):
    labels = torch.tensor([1, 4, 7])
    img, codes = tiny_generator.generate(labels, cfg=1.5, top_k=1, top_p=0.0, seed=3, return_codes=True)
    guided = tiny_generator.guided_logits(labels, codes, cfg=1.5)
    for p in range(2):
        for si in range(4):
            assert torch.equal(codes[p][si], guided[p][si].argmax(dim=-1)), (p, si)
    assert img.shape == (3, 3, 64, 64) and img.min() >= -1 and img.max() <= 1 and img.min() < 0  # the public range


def test_samples_come_from_the_top_k_and_the_nucleus(tiny_generator):
    labels = torch.arange(10)
    _, codes = tiny_generator.generate(labels, cfg=1.0, top_k=5, top_p=0.5, seed=0, return_codes=True)
    guided = tiny_generator.guided_logits(labels, codes, cfg=1.0)
    for p in range(2):
        for si in range(4):
            lg = guided[p][si]
            rank = (lg > lg.gather(-1, codes[p][si].unsqueeze(-1))).sum(-1)
            assert rank.max() < 5
            probs = lg.softmax(-1)
            mass_above = (probs * (probs > probs.gather(-1, codes[p][si].unsqueeze(-1)))).sum(-1)
            assert mass_above.max() < 0.5 + 1e-6  # the code is inside the smallest set reaching 50%


def test_same_seed_same_image_for_any_batch_size(tiny_generator):
    labels = torch.tensor([2, 5, 5, 9])
    batch4, codes4 = tiny_generator.generate(labels, seed=11, top_k=32, return_codes=True)
    for i in range(4):
        one, codes1 = tiny_generator.generate(labels[i:i + 1], seed=11, indices=[i], top_k=32, return_codes=True)
        for p in range(2):
            for si in range(4):
                assert torch.equal(codes1[p][si][0], codes4[p][si][i]), (i, p, si)
        torch.testing.assert_close(one[0], batch4[i], rtol=0, atol=2e-5)  # [-1, 1]: the old 1e-5 of [0, 1]
    other, _ = tiny_generator.generate(labels, seed=12, top_k=32, return_codes=True)
    assert not torch.allclose(other, batch4)
    # same label, different index: different images
    assert not torch.allclose(batch4[1], batch4[2])


def test_prefix_keeps_its_scales_and_samples_the_rest_with_the_same_draws(tiny_generator, ref):
    gen = tiny_generator
    real = gen.tokenizer.encode(ref["x"])
    labels = ref["labels"]
    _, free = gen.generate(labels, seed=4, top_k=16, return_codes=True)
    for k in (1, 2):
        _, kept = gen.generate(labels, seed=4, top_k=16, return_codes=True, prefix=[c[:k] for c in real])
        for p in range(2):
            for si in range(k):
                assert torch.equal(kept[p][si], real[p][si])
        # the later codes are drawn from the logits given the kept scales, with the draws of the free run
        guided = gen.guided_logits(labels, kept, cfg=3.25)
        for p in range(2):
            for si in range(k, 4):
                lg = guided[p][si]
                rank = (lg > lg.gather(-1, kept[p][si].unsqueeze(-1))).sum(-1)
                assert rank.max() < 16
    _, same = gen.generate(labels, seed=4, top_k=16, return_codes=True, prefix=[c[:1] for c in free])
    assert all(torch.equal(a, b) for p in range(2) for a, b in zip(same[p], free[p]))
    whole = gen.generate(labels, seed=4, prefix=real)
    torch.testing.assert_close(whole, gen.tokenizer.decode(real).float(), rtol=0, atol=1e-5)  # one range for both


def test_bad_prefix_is_a_clear_error(tiny_generator, ref):
    gen = tiny_generator
    real = gen.tokenizer.encode(ref["x"])
    labels = ref["labels"]
    with pytest.raises(ValueError, match="2 branches"):
        gen.generate(labels, prefix=real[:1])
    with pytest.raises(ValueError, match="same number of scales"):
        gen.generate(labels, prefix=[real[0][:2], real[1][:1]])
    with pytest.raises(ValueError, match=r"prefix\[0\]\[1\] must be integer codes of shape \(2, 4\)"):
        gen.generate(labels, prefix=[[real[0][0], real[0][1][:, :3]], real[1][:2]])
    with pytest.raises(ValueError, match="outside"):
        gen.generate(labels, prefix=[[real[0][0] + gen.V], real[1][:1]])


def test_joint_sampling_runs_and_is_deterministic(tiny_generator):
    labels = torch.tensor([0, 3])
    a = tiny_generator.generate(labels, seed=5, top_k=16, joint_sample=True)
    b = tiny_generator.generate(labels, seed=5, top_k=16, joint_sample=True)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bfloat16_sampling_is_close_to_float32_logits(tiny_generator, ref):
    codes = tiny_generator.tokenizer.encode(ref["x"])
    f32 = tiny_generator.guided_logits(ref["labels"], codes, cfg=1.0)
    bf16 = tiny_generator.guided_logits(ref["labels"], codes, cfg=1.0, dtype=torch.bfloat16)
    for p in range(2):
        for si in range(4):
            assert (bf16[p][si] - f32[p][si]).abs().max() < 0.1 * f32[p][si].abs().max() + 0.05
    img = tiny_generator.generate(ref["labels"], seed=0, top_k=8, dtype=torch.bfloat16)
    assert img.dtype == torch.float32 and img.shape == (2, 3, 64, 64)


def test_training_mode_drops_labels_and_eval_does_not(ref):
    torch.manual_seed(0)
    gen = imf.load_generator("tiny")
    gen.config = dataclasses.replace(gen.config, cond_drop_rate=0.999999)  # (1.0 is not a valid rate)
    codes = gen.tokenizer.encode(ref["x"])
    uncond = torch.full_like(ref["labels"], gen.num_classes)
    with torch.no_grad():
        dropped = gen.train()(ref["labels"], codes)
        gen.eval()
        torch.testing.assert_close(dropped, gen(uncond, codes), rtol=0, atol=1e-6)
        assert not torch.allclose(gen(ref["labels"], codes), dropped)
    assert not gen.tokenizer.training


def test_token_masking_only_in_training(ref):
    gen = imf.Generator(imf.generator_preset("tiny", p_drop=0.5))
    codes = gen.tokenizer.encode(ref["x"])
    with torch.no_grad():
        a, b = gen.eval()(ref["labels"], codes), gen(ref["labels"], codes)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    gen.config = dataclasses.replace(gen.config, cond_drop_rate=0.0)
    torch.manual_seed(1)
    logits = gen.train()(ref["labels"], codes)
    logits.sum().backward()
    assert gen.empty_emb.weight.grad is not None


def test_gradients_reach_every_generator_parameter(ref):
    gen = imf.load_generator("tiny").train()
    codes = gen.tokenizer.encode(ref["x"])
    logits = gen(ref["labels"], codes)
    targets = torch.cat([torch.cat(c, dim=1) for c in codes], dim=0)
    loss = torch.nn.functional.cross_entropy(
        torch.cat(logits.chunk(2, dim=-1), dim=0).reshape(-1, 64), targets.reshape(-1))
    loss.backward()
    for name, p in gen.named_parameters():
        assert p.grad is not None, name
    assert all(p.grad is None for p in gen.tokenizer.parameters())


def test_our_generator_format_round_trip(tmp_path, tiny_generator, ref):
    out = imf.save_generator(tiny_generator, tmp_path / "gen")
    gen = imf.load_generator(out)
    a = tiny_generator.generate(ref["labels"], seed=1, top_k=8)
    b = gen.generate(ref["labels"], seed=1, top_k=8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the tokenizer inside a generator directory loads on its own too
    tok = imf.load_tokenizer(out)
    torch.testing.assert_close(tok.reconstruct(ref["x"]), tiny_generator.tokenizer.reconstruct(ref["x"]),
                               rtol=0, atol=0)
    # a tokenizer given with our checkpoint would be ignored: refused instead
    with pytest.raises(imf.CheckpointError, match="carry their own tokenizer"):
        imf.load_generator(out, tokenizer="tiny")


def test_convert_var_checkpoint_round_trip(tmp_path, tiny_generator, ref):
    from conftest import DATA
    kind, ours = imf.convert(DATA / "tiny_var.pt", tmp_path / "ours", tokenizer=DATA / "tiny_tokenizer.pt")
    assert kind == "generator"
    _, official = imf.convert(ours, tmp_path / "back.pt")
    gen = imf.load_generator(official)  # our export records the tiny tokenizer's sizes in its args
    codes = tiny_generator.tokenizer.encode(ref["x"])
    with torch.no_grad():
        torch.testing.assert_close(gen(ref["labels"], codes), tiny_generator(ref["labels"], codes), rtol=0, atol=0)


def test_bad_labels_and_options_are_clear_errors(tiny_generator):
    with pytest.raises(ValueError, match="labels must be in"):
        tiny_generator.generate([10])
    with pytest.raises(ValueError, match="cfg schedule"):
        tiny_generator.generate([1], cfg_schedule="cosine")
    with pytest.raises(ValueError, match="dtype"):
        tiny_generator.generate([1], dtype=torch.float64)
    with pytest.raises(imf.ConfigError, match="divisible"):
        imf.generator_preset("tiny", num_heads=3)


def test_presets_derive_width_and_heads_from_depth():
    cfg = imf.generator_preset("d20")
    assert (cfg.embed_dim, cfg.num_heads, cfg.tokenizer.codebook_size) == (1280, 20, 4096)
    assert abs(cfg.drop_path_rate - 0.1 * 20 / 24) < 1e-12
    cfg = imf.generator_preset("d16", depth=24)  # overrides re-derive the dependent fields
    assert (cfg.embed_dim, cfg.num_heads) == (1536, 24)


def test_low_precision_weight_cache_matches_plain_autocast_and_follows_updates(ref):
    gen = imf.load_generator("tiny")
    labels = torch.tensor([1, 2])
    _, codes = gen.generate(labels, seed=0, top_k=8, return_codes=True)

    def plain():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return gen.guided_logits(labels, codes)  # float32 request inside an outer autocast: no cached copies

    def same(a, b):
        return all(torch.equal(x, y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))
    assert same(gen.guided_logits(labels, codes, dtype=torch.bfloat16), plain())
    assert gen.head.weight.dtype == torch.float32  # the fp32 weights are back after the call
    with torch.no_grad():
        gen.head.weight.mul_(2.0)  # an in-place update invalidates the cached copy
    assert same(gen.guided_logits(labels, codes, dtype=torch.bfloat16), plain())
    gen.clear_low_precision_cache()


def test_the_generator_refers_to_its_tokenizer_without_owning_it(ref):
    import copy
    gen = imf.load_generator("tiny")
    tok = gen.tokenizer
    assert all(m is not tok for m in gen.modules()) and not any(k.startswith("tokenizer") for k in gen.state_dict())
    assert {id(p) for p in gen.parameters()}.isdisjoint(id(p) for p in tok.parameters())
    gen.train()
    assert gen.training and not tok.training  # the tokenizer stays frozen in eval mode
    gen.eval()
    gen.double()  # moving / casting the generator takes the tokenizer along: sampling decodes through it
    assert next(tok.parameters()).dtype == torch.float64
    gen.float()
    a = gen.generate(ref["labels"], seed=3, top_k=8)
    deep = copy.deepcopy(gen)  # an independent copy of both
    assert deep.tokenizer is not tok
    torch.testing.assert_close(deep.generate(ref["labels"], seed=3, top_k=8), a, rtol=0, atol=0)
    state = torch.random.get_rng_state()
    shared = gen.sharing_tokenizer()  # the generator's weights on the same tokenizer, no random draws
    assert torch.equal(torch.random.get_rng_state(), state)
    assert shared.tokenizer is tok and not shared.training
    assert all(p.requires_grad for p in shared.parameters())
    torch.testing.assert_close(shared.generate(ref["labels"], seed=3, top_k=8), a, rtol=0, atol=0)
    with torch.no_grad():
        next(shared.parameters()).add_(1.0)  # its own weights: the original is untouched
    torch.testing.assert_close(gen.generate(ref["labels"], seed=3, top_k=8), a, rtol=0, atol=0)


def test_training_attention_on_cpu_matches_the_fused_kernel_in_values_and_gradients():
    from imagefolder.models.blocks import attention
    from imagefolder.models.generator import block_causal_mask
    torch.manual_seed(0)
    bias = block_causal_mask((1, 2, 3), torch.device("cpu"))
    q, k, v = (torch.randn(2, 3, bias.shape[-1], 8, requires_grad=True) for _ in range(3))
    ours = attention(q, k, v, bias, 0.3, 0.0)  # autograd records: the spelled-out form
    ours_grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.3)
    fused_grads = torch.autograd.grad(fused.square().sum(), (q, k, v))
    torch.testing.assert_close(ours, fused, atol=1e-5, rtol=1e-5)
    for a, b in zip(ours_grads, fused_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # no autograd: the fused kernel itself, bit for bit
        assert torch.equal(attention(q, k, v, bias, 0.3, 0.0),
                           torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.3))


def test_compiled_sampling_makes_one_graph_per_scale_and_matches_eager():
    """``generate(compile=True)``: blocks with different drop-path rates share one compiled step per scale (in eval
    drop path is not read), and greedy codes and pictures match the eager sampler."""
    from torch._dynamo.utils import counters
    torch.manual_seed(0)
    gen = imf.load_generator("tiny")
    for i, b in enumerate(gen.blocks):  # as a preset with drop_path_rate > 0 builds them
        b.drop_path = DropPath(0.05 * (i + 1))
    gen.eval()
    labels = torch.tensor([0, 3])
    eager_img, eager_codes = gen.generate(labels, seed=0, top_k=1, return_codes=True)
    torch._dynamo.reset()
    counters.clear()
    img, codes = gen.generate(labels, seed=0, top_k=1, return_codes=True, compile=True)
    assert counters["stats"]["unique_graphs"] == len(gen.patch_nums)
    assert all(torch.equal(a, b) for p, q in zip(codes, eager_codes) for a, b in zip(p, q))
    assert (img - eager_img).abs().max() < 1e-4
    gen.generate(labels, seed=1, top_k=1, compile=True)   # the same shapes: no new graph
    assert counters["stats"]["unique_graphs"] == len(gen.patch_nums)
