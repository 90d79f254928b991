"""The conv tokenizer (enc_type / dec_type cnn): the authors' CNN checkpoint reproduced exactly, its strict and safe
loading, the official layout, product quantization as channel groups, the CNN semantic path, conversion."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

import imagefolder as imf
from imagefolder.official import to_official_state_dict, tokenizer_config_from_args

from conftest import DATA

CNN = DATA / "cnn_tiny"
TOL = 1e-5


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(CNN / "ref.pt", weights_only=True)


@pytest.fixture(scope="module")
def tok():
    return imf.load_tokenizer(CNN / "tokenizer.pt")


def _payload() -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(CNN / "tokenizer.pt", weights_only=True)


# --- reproduction of cnn_tiny/ref.pt ---------------------------------------------------------------------------
def test_config_is_read_from_the_checkpoint(tok):
    c = tok.config
    assert (c.enc_type, c.dec_type, c.ch, c.encoder_ch_mult, c.z_channels) == ("cnn", "cnn", 32, (1, 2, 2), 32)
    assert (c.product_quant, c.codebook_size, c.codebook_embed_dim, c.v_patch_nums) == (1, 64, 8, (1, 2, 4, 8))
    assert c.image_size == 32 and c.latent_side == 8 and c.semantic_guide == "none"


def test_encoder_map_and_latent_match(tok, ref):
    with torch.no_grad():
        assert maxdiff(tok.encoder(ref["x"]), ref["h"]) < TOL
        f = tok.encode_latents(ref["x"])
    assert len(f) == 1 and maxdiff(f[0], ref["f"]) < TOL


def test_codes_exact_and_fhats_match(tok, ref):
    codes, fhats = tok.encode_with_fhats(ref["x"])
    assert len(codes) == 1 and len(codes[0]) == 4
    for si in range(4):
        assert codes[0][si].dtype == torch.int64 and torch.equal(codes[0][si], ref["idx_Bl"][si]), si
        assert maxdiff(fhats[0][si], ref["fhat_scales"][si]) < TOL
    with torch.no_grad():
        assert maxdiff(tok.post_quant_conv(fhats[0][-1]), ref["post_quant_conv_last"]) < TOL


def test_reconstructions_match(tok, ref):
    assert maxdiff(tok.reconstruct(ref["x"]), ref["recon"]) < TOL
    per_scale = tok.reconstruct_per_scale(ref["x"])
    assert len(per_scale) == 4
    for si, img in enumerate(per_scale):
        assert maxdiff(img, ref["recon_all_scales"][si]) < TOL
    assert maxdiff(tok.decode(tok.encode(ref["x"])), ref["recon"]) < TOL


# --- layout and strictness --------------------------------------------------------------------------------------
def test_the_cnn_tiny_preset_has_the_official_layout():
    listed = json.loads((CNN / "config.json").read_text())
    official = {k: tuple(shape) for k, shape, _ in listed["state_dict"]}
    ours = {k: tuple(v.shape) for k, v in to_official_state_dict(imf.Tokenizer(imf.tokenizer_preset("cnn-tiny",
                                                                                                    ch=32))).items()}
    assert ours == official
    counts = listed["param_counts"]
    model = imf.Tokenizer(imf.tokenizer_preset("cnn-tiny", ch=32))
    assert sum(p.numel() for p in model.parameters()) == counts["total"]
    assert sum(p.numel() for p in model.encoder.parameters()) == counts["encoder"]
    assert sum(p.numel() for p in model.decoder.parameters()) == counts["decoder"]


def test_a_checkpoint_without_ch_is_128_wide(tmp_path):
    ckpt = _payload()
    del ckpt["args"].ch
    assert tokenizer_config_from_args(ckpt["args"]).ch == 128  # as every real CNN checkpoint: VQModel never passes ch
    torch.save(ckpt, tmp_path / "no_ch.pt")
    with pytest.raises(imf.CheckpointError, match=r"encoder\.conv_in\.weight has shape \(32, 3, 3, 3\) in the "
                                                  r"checkpoint but \(128, 3, 3, 3\)"):
        imf.load_tokenizer(tmp_path / "no_ch.pt")


def test_levels_follow_vq_model_when_args_do_not_list_them():
    args = vars(_payload()["args"]).copy()
    for key in ("encoder_ch_mult", "decoder_ch_mult", "z_channels"):
        del args[key]
    args.update(vq_model="VQ-8", image_size=64)
    cfg = tokenizer_config_from_args(argparse.Namespace(**args))
    assert cfg.encoder_ch_mult == cfg.decoder_ch_mult == (1, 2, 2, 4) and cfg.z_channels == 256
    with pytest.raises(imf.CheckpointError, match="vq_model 'VQ-32'"):
        tokenizer_config_from_args(argparse.Namespace(**{**args, "vq_model": "VQ-32"}))


def test_missing_and_misshapen_keys_are_named(tmp_path):
    ckpt = _payload()
    for k in ("ema", "model"):
        del ckpt[k]["decoder.conv_blocks.0.attn.2.proj_out.bias"]
    torch.save(ckpt, tmp_path / "missing.pt")
    with pytest.raises(imf.CheckpointError, match=r"decoder\.conv_blocks\.0\.attn\.2\.proj_out\.bias"):
        imf.load_tokenizer(tmp_path / "missing.pt")
    ckpt = _payload()
    ckpt["ema"]["quantize.embedding.weight"] = torch.zeros(65, 8)
    torch.save(ckpt, tmp_path / "shape.pt")
    with pytest.raises(imf.CheckpointError, match=r"quantize\.embedding\.weight has shape \(65, 8\)"):
        imf.load_tokenizer(tmp_path / "shape.pt")


def test_convert_both_ways_keeps_outputs(tok, ref, tmp_path):
    kind, ours = imf.convert(CNN / "tokenizer.pt", tmp_path / "ours")
    assert kind == "tokenizer"
    back_kind, back = imf.convert(ours, tmp_path / "back.pt")
    assert back_kind == "tokenizer"
    with torch.serialization.safe_globals([argparse.Namespace]):
        exported = torch.load(back, weights_only=True)
    assert set(exported["ema"]) == set(_payload()["ema"])  # the official names, 'quantize.' for one branch
    for path in (ours, back):
        again = imf.load_tokenizer(path)
        assert again.config == tok.config
        assert torch.equal(again.reconstruct(ref["x"]), tok.reconstruct(ref["x"]))


# --- product quantization and the semantic path on a conv encoder ---------------------------------------------
def _two_branch(**over):
    torch.manual_seed(0)
    return imf.Tokenizer(imf.tokenizer_preset("cnn-small", **over)).eval()


def test_branches_are_channel_groups_of_one_map():
    tok = _two_branch()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        full = tok.quant_conv(tok.encoder(x))
        f = tok.encode_latents(x)
    assert full.shape == (2, 16, 8, 8) and [tuple(b.shape) for b in f] == [(2, 8, 8, 8)] * 2
    assert torch.equal(f[0], full[:, :8]) and torch.equal(f[1], full[:, 8:])
    codes = tok.encode(x)
    assert [len(c) for c in codes] == [6, 6] and codes[1][-1].shape == (2, 64)
    with torch.no_grad():  # each branch's codes are its own group's quantization; the decoder sees both
        assert all(torch.equal(a, b) for a, b in zip(codes[1], tok.quantizes[1].encode(full[:, 8:])))
        assert torch.equal(tok.decode(codes), tok.fhat_to_img(tok.codes_to_fhat(codes)))
        assert torch.equal(tok.decode(codes), tok.reconstruct(x))
    assert tuple(tok.post_quant_conv.weight.shape) == (32, 16, 1, 1)


def test_low_precision_runs_the_conv_networks_channels_last_and_fp32_stays_exact():
    """bf16: cached conv weights in bf16 channels-last, the same pictures as plain autocast; decoding given codes
    within bf16 rounding of fp32 (random weights: encoding in bf16 may pick other codes at near ties);
    fp32 weights and results untouched."""
    tok = _two_branch()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    codes = tok.encode(x)
    with torch.no_grad():
        exact, exact_decoded = tok.reconstruct(x), tok.decode(codes)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = tok.reconstruct(x)
    with tok.precision(torch.bfloat16):
        cached, decoded = tok.reconstruct(x), tok.decode(codes)
        conv = tok.decoder.conv_out
        assert conv.weight.dtype == torch.bfloat16 and conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert cached.is_contiguous() and decoded.is_contiguous()
    drift = (decoded.float() - exact_decoded).abs()
    assert torch.equal(cached, plain) and drift.mean() < 0.01 and drift.max() < 0.15
    assert tok.decoder.conv_out.weight.dtype == torch.float32 and tok.decoder.conv_out.weight.is_contiguous()
    with torch.no_grad():
        assert torch.equal(tok.reconstruct(x), exact)


def test_swish_is_in_place_only_without_gradient():
    from imagefolder.models.conv import swish
    h = torch.randn(2, 32, 4, 4)
    with torch.no_grad():
        y = h.clone()
        assert swish(y) is y and torch.equal(y, torch.nn.functional.silu(h))
    g = h.clone().requires_grad_(True)
    out = swish(g * 1.0)
    out.sum().backward()
    assert torch.equal(g, h) and torch.allclose(g.grad, torch.sigmoid(h) * (1 + h * (1 - torch.sigmoid(h))))


def test_decoding_on_a_cpu_without_autograd_goes_in_chunks_of_pixels(monkeypatch):
    """fhat_to_img decodes at most DECODE_CHUNK_PIXELS output pixels at once on a CPU without autograd (less peak
    memory); the pictures agree with decoding the whole batch within 1e-5, and with autograd it is one pass."""
    import imagefolder.models.tokenizer as tokenizer_module
    tok = _two_branch()
    monkeypatch.setattr(tokenizer_module, "DECODE_CHUNK_PIXELS", 2 * 32 * 32)  # two 32 px pictures per pass
    f_hat = torch.randn(5, tok.config.codebook_embed_dim * 2, tok.config.latent_side, tok.config.latent_side)
    batches: list[int] = []
    hook = tok.decoder.register_forward_hook(lambda module, args, out: batches.append(out.shape[0]))
    try:
        with torch.no_grad():
            chunked = tok.fhat_to_img(f_hat)
        assert batches == [2, 2, 1]
        batches.clear()
        whole = tok.fhat_to_img(f_hat)
        assert batches == [5] and whole.requires_grad
    finally:
        hook.remove()
    assert chunked.shape == whole.shape and maxdiff(chunked, whole.detach()) < TOL
    assert chunked.min() >= -1 and chunked.max() <= 1


def _classifier_teacher() -> dict:
    from imagefolder.models.classifier import ClassifierConfig
    return ClassifierConfig(image_size=32, width=12, depth=3).to_dict()  # 48-d features, no encoder width to match


def test_semantic_path_pulls_the_last_branch_of_the_encoder_map():
    teacher = _classifier_teacher()
    tok = _two_branch(semantic_guide="classifier", teacher=teacher, half_sem=True).train()
    feat_dim = tok.semantic_model.config.feature_dim
    assert tuple(tok.sem_linear.weight.shape) == (8, feat_dim)  # any teacher width: sem_linear projects it
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    latents = [torch.randn(4, 8, 8, 8), torch.randn(4, 8, 8, 8)]
    student = tok.semantic_student(latents, quant=[])
    assert torch.equal(student, latents[1].mean(dim=(2, 3)))
    moved = [latents[0] + 3.0, latents[1]]  # the detail branch does not take part
    assert torch.equal(tok.semantic_loss(x, tok.semantic_student(moved, []), 0),
                       tok.semantic_loss(x, student, 0))
    out = tok(x, n_keep=torch.full((4,), 6))
    out.losses["semantic"].backward()
    assert tok.sem_linear.weight.grad.abs().sum() > 0 and tok.quant_conv.weight.grad[8:].abs().sum() > 0
    assert tok.quant_conv.weight.grad[:8].abs().sum() == 0  # only the semantic group's channels get its gradient
    every = _two_branch(semantic_guide="classifier", teacher=teacher, half_sem=False)
    assert tuple(every.sem_linear.weight.shape) == (16, feat_dim)


def test_conv_config_errors_name_the_fix():
    with pytest.raises(imf.ConfigError, match="multiples of 32"):
        imf.tokenizer_preset("cnn-small", ch=16)
    with pytest.raises(imf.ConfigError, match="set num_latent_tokens to 16"):
        imf.tokenizer_preset("cnn-small", image_size=16)
    with pytest.raises(imf.ConfigError, match="dec_type must be"):
        imf.tokenizer_preset("cnn-small", dec_type="vqgan")


# --- the rest of the system on a conv tokenizer -----------------------------------------------------------------
def test_train_pretokenize_generator_sample_reconstruct_probe(tmp_path):
    """A two-branch conv tokenizer trains a few steps; its codes feed a generator that trains and samples; the
    reconstruct, probe and convert commands take it."""
    import yaml
    from safetensors.torch import load_file

    from imagefolder.cli import main
    from imagefolder.data.make_dataset import make_dataset

    make_dataset("shapes", tmp_path / "data", size=16, train_per_class=2, val_per_class=1, seed=0)
    tok_cfg = dict(model_preset="cnn-small", image_size=16, encoder_ch_mult=[1, 1], decoder_ch_mult=[1, 1],
                   num_res_blocks=1, z_channels=16, num_latent_tokens=64, v_patch_nums=[1, 2, 4, 8],
                   codebook_size=16, codebook_drop=0.5, data_path=str(tmp_path / "data" / "train"),
                   val_data_path=str(tmp_path / "data" / "val"), global_batch_size=4, lr=3e-3, warmup_steps=1,
                   num_workers=0, perceptual_weight=0.0, disc_type="none", log_every=1, val_every=3,
                   tensorboard=False, rfid_features="none")
    (tmp_path / "tok.yaml").write_text(yaml.safe_dump(tok_cfg))
    assert main(["train-tokenizer", "--config", str(tmp_path / "tok.yaml"), "--out", str(tmp_path / "tok"),
                 "--max-steps", "3", "--no-progress"]) == 0
    tok = imf.load_tokenizer(tmp_path / "tok" / "last")
    assert tok.config.enc_type == "cnn" and tok.num_branches == 2
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    codes = tok.encode(x)
    assert torch.equal(tok.decode(codes), tok.reconstruct(x))
    assert [[tuple(c.shape) for c in branch] for branch in codes] == [[(3, 1), (3, 4), (3, 16), (3, 64)]] * 2

    cache = tmp_path / "codes.safetensors"
    assert main(["pretokenize", "--tokenizer", str(tmp_path / "tok" / "last"), "--data", str(tmp_path / "data" / "train"),
                 "--out", str(cache), "--num-workers", "0", "--no-progress"]) == 0
    assert load_file(cache)  # written and readable
    gen_cfg = dict(model_preset="tiny", depth=1, embed_dim=64, num_heads=2, drop_path_rate=0.0, global_batch_size=4,
                   lr=3e-3, warmup_steps=1, num_workers=0, log_every=1, ckpt_every=1000, val_every=0,
                   tensorboard=False, val_samples=0, data_path=str(tmp_path / "data"),
                   tokenizer=str(tmp_path / "tok" / "last"), codes_cache=str(cache))
    (tmp_path / "gen.yaml").write_text(yaml.safe_dump(gen_cfg))
    assert main(["train-generator", "--config", str(tmp_path / "gen.yaml"), "--out", str(tmp_path / "gen"),
                 "--max-steps", "3", "--no-progress"]) == 0
    gen = imf.load_generator(tmp_path / "gen" / "last")
    assert gen.tokenizer.config == tok.config
    imgs = gen.generate(torch.tensor([0, 3]), cfg=2.0, top_k=4, seed=0)
    assert imgs.shape == (2, 3, 16, 16) and -1 <= imgs.min() and imgs.max() <= 1
    assert main(["sample", "--generator", str(tmp_path / "gen" / "last"), "--classes", "1,2", "--out",
                 str(tmp_path / "samples")]) == 0
    assert len(list((tmp_path / "samples").rglob("*.png"))) >= 2
    assert main(["reconstruct", "--tokenizer", str(tmp_path / "tok" / "last"), "--images",
                 str(tmp_path / "data" / "val"), "--out", str(tmp_path / "rec")]) == 0
    assert (tmp_path / "rec" / "grid.png").is_file()
    assert main(["probe", "--tokenizer", str(tmp_path / "tok" / "last"), "--data", str(tmp_path / "data"),
                 "--epochs", "5", "--out", str(tmp_path / "probe.json")]) == 0
    kind, official = imf.convert(tmp_path / "tok" / "last", tmp_path / "official.pt")
    assert kind == "tokenizer" and torch.equal(imf.load_tokenizer(official).reconstruct(x), tok.reconstruct(x))
