"""Pattern scales of the quantizer (``pattern_scales``): whole latent patches as codes, their upkeep, and the
tokenizer / generator / export paths that must know about them."""
from __future__ import annotations

import pytest
import torch

from imagefolder.config import ConfigError, GeneratorConfig, TokenizerConfig
from imagefolder.models.quantizer import RESTART_AFTER, RESTART_EVERY, MultiScaleQuantizer

SCALES = (1, 2, 4)


def trained_quantizer(pattern_scales=2, seed=0):
    torch.manual_seed(seed)
    q = MultiScaleQuantizer(16, 3, SCALES, pattern_scales=pattern_scales).train()
    q(torch.randn(8, 3, 4, 4))  # the first training batch fills the pattern codebooks
    return q


def test_a_pattern_code_is_its_patch_placed_in_its_cell_without_interpolation():
    q = MultiScaleQuantizer(16, 3, SCALES, pattern_scales=2, quant_resi=0.0)  # no phi conv: the raw placement
    with torch.no_grad():
        q.patterns[1].normal_()
    idx = torch.tensor([[5, 0, 0, 9]])  # scale 1: a 2x2 grid of cells of 2x2 latent positions
    h = q.contribution(1, idx)
    assert h.shape == (1, 3, 4, 4)
    torch.testing.assert_close(h[0, :, :2, :2], q.patterns[1][5].view(3, 2, 2))  # top-left cell: code 5
    torch.testing.assert_close(h[0, :, 2:, 2:], q.patterns[1][9].view(3, 2, 2))  # bottom-right cell: code 9
    one = q.contribution(0, torch.tensor([[3]]))
    torch.testing.assert_close(one[0], q.patterns[0][3].view(3, 4, 4))  # a 1x1 scale: a whole latent picture


def test_a_pattern_scale_picks_the_nearest_patch_and_encode_matches_the_training_forward():
    q = trained_quantizer()
    assert q.patterns_ready.tolist() == [1.0, 1.0]
    f = torch.randn(5, 3, 4, 4)
    codes, fhats = q.eval().encode(f, return_fhats=True)
    d = torch.cdist(f.reshape(5, -1), q.patterns[0].detach())
    assert torch.equal(codes[0][:, 0], d.argmin(1))  # nearest in L2 to the whole residual, not to its mean
    torch.testing.assert_close(q.codes_to_fhats(codes)[-1], fhats[-1], rtol=0, atol=1e-6)
    torch.testing.assert_close(q(f).f_hat, fhats[-1], rtol=0, atol=1e-5)  # eval forward: no upkeep, same values


def test_pattern_codebooks_start_from_data_learn_from_the_vq_loss_and_get_dead_codes_back():
    torch.manual_seed(0)
    q = MultiScaleQuantizer(16, 3, SCALES, pattern_scales=1).train()
    assert q.patterns[0].abs().sum() == 0
    f = torch.randn(8, 3, 4, 4, requires_grad=True)
    out = q(f)
    filled = q.patterns[0].detach().clone()
    assert filled.abs().sum() > 0 and q.patterns_ready[0] == 1
    out.vq_loss.backward()
    assert q.patterns[0].grad.abs().sum() > 0  # the codes used move toward their residuals
    q(torch.randn(8, 3, 4, 4))
    assert torch.equal(q.patterns[0].detach(), filled)  # filled once, not on every batch
    q.update_usage(out.hits_KV)
    q.usage_updates = RESTART_AFTER + RESTART_EVERY - RESTART_AFTER % RESTART_EVERY  # an upkeep step
    q.ema_vocab_hit_SV[0] = 1.0
    q.ema_vocab_hit_SV[0, 4] = 0.0  # code 4 unused for long
    q(torch.randn(8, 3, 4, 4))
    moved = (q.patterns[0].detach() != filled).any(1)
    assert moved.tolist() == [i == 4 for i in range(16)]


def test_the_upkeep_is_the_same_in_every_process_given_the_gathered_patches():
    # two replicas seeing different local batches but the same gathered ones fill identical codebooks
    torch.manual_seed(1)
    everyone = torch.randn(8, 3, 4, 4)
    a = MultiScaleQuantizer(16, 3, SCALES, pattern_scales=1).train()
    b = MultiScaleQuantizer(16, 3, SCALES, pattern_scales=1).train()
    b.load_state_dict(a.state_dict())
    gather = lambda t: a._patch_rows(everyone, 0) if t.shape[0] == 4 else t  # noqa: E731
    a(everyone[:4], gather_fn=gather)
    b(everyone[4:] * 0 + everyone[:4], gather_fn=gather)
    assert torch.equal(a.patterns[0], b.patterns[0])


def test_pattern_scales_must_divide_the_grid_and_are_refused_by_the_official_formats():
    with pytest.raises(ValueError, match="must divide the latent grid"):
        MultiScaleQuantizer(16, 3, (1, 3, 4), pattern_scales=2)
    base = dict(enc_type="cnn", dec_type="cnn", semantic_guide="none", image_size=16, ch=32, z_channels=16,
                encoder_ch_mult=(1, 1, 1), decoder_ch_mult=(1, 1, 1), num_res_blocks=1, codebook_size=16,
                codebook_embed_dim=4, product_quant=2, v_patch_nums=(1, 2, 3, 4), num_latent_tokens=16)
    with pytest.raises(ConfigError, match="must divide the latent grid side 4"):
        TokenizerConfig(**base, pattern_scales=3)
    from imagefolder.models.tokenizer import Tokenizer
    from imagefolder.official import to_official_state_dict
    from imagefolder.var_release import fits_release
    cfg = TokenizerConfig(**base, pattern_scales=2)
    tok = Tokenizer(cfg)
    with pytest.raises(ValueError, match="no pattern scales"):
        to_official_state_dict(tok)
    release_like = {**base, "product_quant": 1, "num_res_blocks": 2, "z_channels": 4}  # fits but for the patterns
    assert "pattern_scales" in fits_release(TokenizerConfig(**release_like, pattern_scales=1))


def test_a_tokenizer_with_pattern_scales_round_trips_and_a_generator_samples_and_edits_on_it(tmp_path):
    import imagefolder as imf
    from imagefolder.loading import save_tokenizer
    from imagefolder.models.generator import Generator
    from imagefolder.models.tokenizer import Tokenizer
    torch.manual_seed(0)
    cfg = TokenizerConfig(enc_type="cnn", dec_type="cnn", semantic_guide="none", image_size=16, ch=32, z_channels=16,
                          encoder_ch_mult=(1, 1, 1), decoder_ch_mult=(1, 1, 1), num_res_blocks=1, codebook_size=16,
                          codebook_embed_dim=4, product_quant=2, v_patch_nums=(1, 2, 4), num_latent_tokens=16,
                          pattern_scales=2)
    tok = Tokenizer(cfg).train()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    tok(x)  # fills the pattern codebooks
    tok.eval()
    save_tokenizer(tok, tmp_path / "tok")
    back = imf.load_tokenizer(tmp_path / "tok")
    assert [q.patterns_ready.tolist() for q in back.quantizes] == [[1.0, 1.0]] * 2
    codes = tok.encode(x)
    assert all(torch.equal(a, b) for pa, pb in zip(codes, back.encode(x)) for a, b in zip(pa, pb))
    torch.testing.assert_close(back.decode(codes), tok.decode(codes), rtol=0, atol=0)

    gen = Generator(GeneratorConfig(depth=1, embed_dim=32, num_heads=2, num_classes=3, tokenizer=cfg),
                    tokenizer=back).eval()
    labels = torch.tensor([0, 2])
    img, drawn = gen.generate(labels, cfg=2.0, top_k=0, top_p=0.9, seed=0, return_codes=True)
    assert img.shape == (2, 3, 16, 16) and img.abs().max() <= 1
    torch.testing.assert_close(img, back.decode(drawn), rtol=0, atol=1e-5)  # codes decode to the sample
    # teacher forcing sees the same inputs the sampler builds: its logits equal the sampler's (cfg 0)
    tf = gen(labels, drawn)
    guided = gen.guided_logits(labels, drawn, cfg=0.0)
    torch.testing.assert_close(torch.cat([torch.cat(per_scale, 1) for per_scale in guided], -1), tf,
                               rtol=0, atol=1e-4)
    smooth = gen.generate(labels, cfg=2.0, top_k=0, top_p=0.9, seed=0, more_smooth=True)  # mixtures of patches
    assert smooth.shape == img.shape and torch.isfinite(smooth).all()
    keep = torch.ones(16, 16)
    edited = gen.generate(labels, seed=0, source=[[c[:2] for c in b] for b in codes], keep_mask=keep)
    torch.testing.assert_close(edited, back.decode([[c[:2] for c in b] for b in codes]), rtol=0, atol=1e-5)
