"""Tokenizer behaviour: the public contract, the training forward, semantic regularisation, our checkpoint format."""
from __future__ import annotations

import json

import pytest
import torch

import imagefolder as imf


@pytest.fixture(scope="module")
def x(ref):
    return ref["x"]


def test_decode_of_encode_equals_reconstruct(tiny_tokenizer, x):
    codes = tiny_tokenizer.encode(x)
    assert len(codes) == 2 and [c.shape for c in codes[0]] == [(2, 1), (2, 4), (2, 9), (2, 16)]
    torch.testing.assert_close(tiny_tokenizer.decode(codes), tiny_tokenizer.reconstruct(x), rtol=0, atol=0)
    img = tiny_tokenizer.reconstruct(x)
    assert img.shape == x.shape and img.min() >= -1 and img.max() <= 1


def test_prefix_of_scales_decodes_to_the_per_scale_reconstruction(tiny_tokenizer, x):
    codes = tiny_tokenizer.encode(x)
    per_scale = tiny_tokenizer.reconstruct_per_scale(x)
    for k in range(1, 5):
        prefix = [c[:k] for c in codes]
        torch.testing.assert_close(tiny_tokenizer.decode(prefix), per_scale[k - 1], rtol=0, atol=1e-5)


def test_training_forward_losses_usage_and_dropout(x):
    torch.manual_seed(0)
    tok = imf.load_tokenizer("tiny").train()
    xb = x.repeat(5, 1, 1, 1)  # B = 10 -> the first int(10 * 0.1) = 1 sample is dropped
    out = tok(xb)
    assert out.recon.shape == xb.shape
    assert set(out.losses) == {"codebook", "commitment", "semantic"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    assert all(q.ema_vocab_hit_SV.sum(dim=1).tolist() == [10 * pn * pn for pn in tok.v_patch_nums]
               for q in tok.quantizes)  # the usage statistic counted every code of the batch
    assert out.n_keep[1:].tolist() == [4] * 9 and 3 <= out.n_keep[0] <= 4
    sum(out.losses.values()).add(out.recon.square().mean()).backward()
    assert tok.encoder.latent_tokens.grad is not None and tok.encoder.latent_tokens.grad.abs().sum() > 0
    assert tok.quantizes[0].embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in tok.semantic_model.parameters())  # the teacher is frozen
    assert not tok.semantic_model.training


def test_reconstruction_gradient_reaches_the_encoder_straight_through(x):
    tok = imf.load_tokenizer("tiny").train()
    out = tok(x, n_keep=torch.tensor([4, 4]))
    out.recon.sum().backward()
    assert tok.encoder.model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert tok.quant_conv.weight.grad.abs().sum() > 0


def test_eval_forward_keeps_all_scales_and_matches_reconstruct(tiny_tokenizer, x):
    out = tiny_tokenizer(x)
    assert out.n_keep.tolist() == [4, 4]
    torch.testing.assert_close(out.recon.clamp(-1, 1), tiny_tokenizer.reconstruct(x), rtol=0, atol=1e-5)


def test_scale_dropout_draw():
    tok = imf.load_tokenizer("tiny")
    g = torch.Generator().manual_seed(0)
    n_keep = tok.sample_scale_dropout(40, generator=g)
    assert n_keep[4:].tolist() == [4] * 36  # int(40 * 0.1) = 4 dropped samples
    assert all(3 <= k <= 4 for k in n_keep[:4].tolist())


def test_semantic_loss_on_last_branch_skips_dropped_samples(tiny_tokenizer, x):
    f = [torch.randn(4, 8, 4, 4) for _ in range(2)]
    xb = x.repeat(2, 1, 1, 1)
    def loss(quant, n_skip):
        return tiny_tokenizer.semantic_loss(xb, tiny_tokenizer.semantic_student([], quant), n_skip=n_skip)

    full = loss(f, 0)
    # changing a skipped sample or the other branch does not change the loss
    f2 = [f[0] * 3, f[1].clone()]
    f2[1][0] += 5
    assert torch.allclose(loss(f2, 1), loss(f, 1))
    assert not torch.allclose(full, loss(f2, 0))


def test_semantic_regularisation_of_all_branches():
    cfg = imf.tokenizer_preset("tiny", half_sem=False)
    tok = imf.Tokenizer(cfg)
    assert tuple(tok.sem_linear.weight.shape) == (8, 16, 1, 1)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out = tok.train()(x)
    out.losses["semantic"].backward()
    assert tok.sem_linear.weight.grad.abs().sum() > 0


def test_without_semantic_guide_there_is_no_teacher():
    tok = imf.Tokenizer(imf.tokenizer_preset("tiny", semantic_guide="none"))
    assert not hasattr(tok, "semantic_model")
    out = tok(torch.zeros(1, 3, 64, 64))
    assert set(out.losses) == {"codebook", "commitment"}


def test_wrong_image_size_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 64, 64\)"):
        tiny_tokenizer.encode(torch.zeros(1, 3, 32, 32))


def test_our_format_round_trip(tmp_path, tiny_tokenizer, x):
    out = imf.save_tokenizer(tiny_tokenizer, tmp_path / "tok")
    meta = json.loads((out / "config.json").read_text())
    assert meta["kind"] == "tokenizer" and meta["config"]["codebook_size"] == 64
    tok = imf.load_tokenizer(out)
    torch.testing.assert_close(tok.reconstruct(x), tiny_tokenizer.reconstruct(x), rtol=0, atol=0)
    assert not any(p.is_meta for p in tok.parameters())


def test_convert_official_to_ours_and_back(tmp_path, tiny_tokenizer, x):
    from conftest import DATA
    kind, out = imf.convert(DATA / "tiny_tokenizer.pt", tmp_path / "ours")
    assert kind == "tokenizer"
    kind, back = imf.convert(out, tmp_path / "official.pt")
    again = imf.load_tokenizer(back)
    torch.testing.assert_close(again.reconstruct(x), tiny_tokenizer.reconstruct(x), rtol=0, atol=0)


def test_corrupt_weights_file_is_a_clear_error(tmp_path, tiny_tokenizer):
    out = imf.save_tokenizer(tiny_tokenizer, tmp_path / "tok")
    (out / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(imf.CheckpointError, match="model.safetensors"):
        imf.load_tokenizer(out)


def test_config_validation():
    with pytest.raises(imf.ConfigError, match="num_latent_tokens"):
        imf.tokenizer_preset("tiny", num_latent_tokens=15)
    with pytest.raises(imf.ConfigError, match="last scale"):
        imf.tokenizer_preset("tiny", v_patch_nums=(1, 2, 3))
    with pytest.raises(imf.ConfigError, match="semantic_guide"):
        imf.tokenizer_preset("tiny", semantic_guide="clip")
    with pytest.raises(imf.ConfigError, match="unknown tokenizer preset"):
        imf.tokenizer_preset("huge")
    with pytest.raises(imf.ConfigError, match="unknown TokenizerConfig field"):
        imf.TokenizerConfig.from_dict({"codebook_sz": 3})


def test_pretrained_backbone_from_a_local_file(tmp_path):
    """DINOv2-style weights in timm's format (patch 14, 37x37 grid) are resampled to our patch and grid size."""
    import timm
    from safetensors.torch import save_file
    src = timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False, embed_dim=64, depth=2,
                            num_heads=2, num_classes=0)
    path = tmp_path / "dinov2_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, path)
    tok = imf.Tokenizer(imf.tokenizer_preset("tiny"), pretrained_backbone=path)
    assert tuple(tok.encoder.model.pos_embed.shape) == (1, 65, 64)
    assert tuple(tok.encoder.model.patch_embed.proj.weight.shape) == (64, 3, 8, 8)
    for vit in (tok.encoder.model, tok.decoder.model, tok.semantic_model):
        assert torch.equal(vit.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        imf.Tokenizer(imf.tokenizer_preset("tiny"), pretrained_backbone=tmp_path / "missing.safetensors")


def test_low_precision_context_equals_autocast(tiny_tokenizer, x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = tiny_tokenizer.reconstruct(x)
    with tiny_tokenizer.precision(torch.bfloat16):
        cached = tiny_tokenizer.reconstruct(x)
        again = tiny_tokenizer.reconstruct(x)
    assert torch.equal(plain, cached) and torch.equal(cached, again)
    assert tiny_tokenizer.decoder.to_pixel.weight.dtype == torch.float32
    with tiny_tokenizer.precision(torch.float32):
        torch.testing.assert_close(tiny_tokenizer.reconstruct(x), tiny_tokenizer.reconstruct(x), rtol=0, atol=0)
    tiny_tokenizer.clear_low_precision_cache()
    with pytest.raises(ValueError, match="dtype"):
        with tiny_tokenizer.precision(torch.int8):
            pass


def test_random_init_vits_start_from_smooth_sincos_positions():
    from imagefolder.models.vit import create_vit, sincos_2d
    vit = create_vit("vit_small_patch14_dinov2.lvd142m", image_size=32, patch_size=4, drop_path_rate=0.0,
                     vit_kwargs={"embed_dim": 32, "depth": 1, "num_heads": 2})
    pe = vit.pos_embed[0]
    assert torch.equal(pe[0], torch.zeros(32)) and torch.allclose(pe[1:], sincos_2d(32, 8))
    # neighbouring positions are more alike than distant ones (what resampling to latent grids relies on)
    grid = pe[1:].view(8, 8, 32)
    near = torch.cosine_similarity(grid[3, 3], grid[3, 4], dim=0)
    far = torch.cosine_similarity(grid[3, 3], grid[7, 0], dim=0)
    assert near > far + 0.2
