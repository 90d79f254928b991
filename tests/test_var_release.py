"""VAR's own release (FoundationVision/VAR): the VQVAE and the d16-d30 generators as presets with exactly the
released keys and shapes; the reference test set (var_tiny, made by VAR's code) loaded strictly and reproduced
(codes exactly, maps and logits within 1e-5, the sampler's guided logits at every scale); errors that name the
key; conversion both ways; more_smooth; the command line; fine-tuning from a VAR checkpoint."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import imagefolder as imf
from conftest import DATA, parse_keys
from imagefolder import var_release
from imagefolder.cli import main
from imagefolder.config import VAR_PATCH_NUMS
from imagefolder.loading import release_vqvae_path
from imagefolder.models.sampling import filter_top_k_top_p, smooth_weights
from imagefolder.official import to_official_state_dict

VAR_TINY = DATA / "var_tiny"
TOL = 1e-5
TINY_PN = (1, 2, 3, 4)


VAE = VAR_TINY / "vae.pth"
VAR = VAR_TINY / "var.pth"


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(VAR_TINY / "ref.pt", weights_only=True)


@pytest.fixture(scope="module")
def tok():
    return imf.load_tokenizer(VAE, v_patch_nums=TINY_PN)


@pytest.fixture(scope="module")
def gen():
    return imf.load_generator(VAR, tokenizer=VAE)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _header_params(name: str) -> int:
    first = (DATA / "var_full_keys" / name).read_text().splitlines()[0]
    return int(re.search(r"parameters=(\d+)", first).group(1))


def _listing(sd: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()}


# --- full-size presets: exactly the released keys and shapes (built on the meta device) ----------------------------
def test_vqvae_preset_has_the_released_layout():
    with torch.device("meta"):
        tok = imf.Tokenizer(imf.tokenizer_preset("var-vqvae"))
    name = "vae_ch160v4096Z32.keys.tsv"
    assert _listing(var_release.vqvae_state(tok)) == parse_keys(f"var_full_keys/{name}")
    assert sum(p.numel() for p in tok.parameters()) == _header_params(name)
    c = tok.config
    assert (c.ch, c.z_channels, c.codebook_size, c.v_patch_nums, c.image_size) == (160, 32, 4096, VAR_PATCH_NUMS, 256)


@pytest.mark.parametrize("depth", [16, 20, 24, 30])
def test_generator_presets_have_the_released_layout(depth):
    with torch.device("meta"):
        gen = imf.Generator(imf.generator_preset(f"var-d{depth}"))
    name = f"var_d{depth}.keys.tsv"
    assert _listing(to_official_state_dict(gen)) == parse_keys(f"var_full_keys/{name}")
    own = sum(p.numel() for p in gen.parameters())  # the generator's own: its tokenizer is not a submodule
    assert own == _header_params(name)
    assert gen.L == 680 and gen.P == 1 and gen.V == 4096


# --- the reference set: configuration, exact reproduction --------------------------------------------------------
def test_configurations_are_read_off_the_weights(tok, gen):
    assert tok.config == imf.tokenizer_preset("var-vqvae-tiny")
    default = imf.load_tokenizer(VAE)  # the file does not store its scales: the release's by default
    assert default.config.v_patch_nums == VAR_PATCH_NUMS and default.config.image_size == 256
    # the generator file says its scales, so its tokenizer is read with them
    assert gen.tokenizer.config == imf.tokenizer_preset("var-vqvae-tiny")
    assert gen.config == imf.generator_preset("var-tiny")


def test_codes_exact_and_maps_match(tok, ref):
    with torch.no_grad():
        assert maxdiff(tok.encoder(ref["x"]), ref["h"]) < TOL
        assert maxdiff(tok.encode_latents(ref["x"])[0], ref["f"]) < TOL
    codes, fhats = tok.encode_with_fhats(ref["x"])
    for si in range(4):
        assert codes[0][si].dtype == torch.int64 and torch.equal(codes[0][si], ref["idx_Bl"][si]), si
        assert maxdiff(fhats[0][si], ref["fhat_scales"][si]) < TOL


def test_reconstructions_match(tok, ref):
    assert maxdiff(tok.reconstruct(ref["x"]), ref["recon"]) < TOL
    for si, img in enumerate(tok.reconstruct_per_scale(ref["x"])):
        assert maxdiff(img, ref["recon_all_scales"][si]) < TOL, si
    assert maxdiff(tok.decode([ref["idx_Bl"]]), ref["recon_from_idx"]) < TOL


def test_bf16_reconstruction_searches_the_codebook_on_an_fp32_residual(tok, ref):
    """Under bf16 the encoder's latent is bf16; the Euclidean search's in-place distance update then mixed it with
    the fp32 codebook and failed (VAR's own img_to_reconstructed_img fails the same way under CPU autocast). The
    quantizer keeps its residual in fp32, so reconstruction runs, with pictures near the fp32 ones."""
    with tok.precision(torch.bfloat16):
        codes = tok.encode(ref["x"])
        rec = tok.reconstruct(ref["x"])
    assert rec.shape == ref["recon"].shape and torch.isfinite(rec).all()
    assert all(c.dtype == torch.int64 for c in codes[0])
    agree = torch.cat([(c == r).flatten() for c, r in zip(codes[0], ref["idx_Bl"])]).float().mean().item()
    assert agree > 0.5, agree
    assert (rec.float() - ref["recon"]).abs().mean() < 0.1


def test_teacher_forcing_matches(gen, ref):
    assert maxdiff(gen.tokenizer.var_input([ref["idx_Bl"]]), ref["var_input"]) < TOL
    outputs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outputs.append(o)) for b in gen.blocks]
    try:
        with torch.no_grad():
            logits = gen(ref["labels"], [ref["idx_Bl"]])
    finally:
        for h in hooks:
            h.remove()
    assert maxdiff(logits, ref["var_logits"]) < TOL
    for ours, theirs in zip(outputs, ref["var_block_outputs"]):
        assert maxdiff(ours, theirs) < TOL


def test_sampler_sees_the_official_guided_logits(gen, ref):
    ar = ref["ar_sample"]
    kw = ar["kwargs"]
    labels = torch.tensor(kw["label_B"])
    guided = gen.guided_logits(labels, [ar["idx_Bl"]], cfg=kw["cfg"])
    for si in range(4):
        assert maxdiff(guided[0][si], ar["guided_logits"][si]) < TOL, si
        ours = filter_top_k_top_p(guided[0][si], kw["top_k"], kw["top_p"])
        theirs = ar["filtered_logits"][si]
        assert torch.equal(torch.isinf(ours), torch.isinf(theirs)), si
    uncond = gen.guided_logits(labels, [ar["idx_Bl"]], cfg=0.0)  # no guidance: the conditional half
    for si in range(4):
        assert maxdiff(uncond[0][si], ar["raw_logits_2B"][si][:2]) < TOL
    assert maxdiff(gen.tokenizer.decode([ar["idx_Bl"]]).add(1).mul(0.5), ar["img"]) < TOL


def test_our_sampler_runs_on_the_release_seeded_per_image(gen):
    labels = torch.tensor([3, 7])
    kw = dict(cfg=3.0, top_k=16, top_p=0.9, seed=0)
    img, codes = gen.generate(labels, return_codes=True, **kw)
    assert img.shape == (2, 3, 64, 64) and -1 <= img.min() and img.max() <= 1
    assert [c.shape for c in codes[0]] == [(2, 1), (2, 4), (2, 9), (2, 16)]
    assert torch.equal(gen.generate(labels, **kw), img)
    alone = gen.generate(labels[1:], indices=[1], **kw)
    assert maxdiff(alone[0], img[1]) < 2e-5  # 1e-5 of the [0, 1] range


# --- more_smooth ---------------------------------------------------------------------------------------------------
def test_smooth_weights_follow_vars_definition():
    logits = torch.tensor([[[2.0, 1.0, -torch.inf, 0.5]]])
    u = torch.tensor([[[0.3, 0.6, 0.9, 0.2]]], dtype=torch.float64)
    for si, K in ((0, 4), (2, 4), (3, 4)):
        r = si / (K - 1)
        tau = max(0.27 * (1 - 0.95 * r), 0.005)
        gumbel = -torch.log(-torch.log(u))
        want = ((logits.double() * (1 + r) + gumbel) / tau).softmax(-1)
        got = smooth_weights(logits, u, si, K)
        assert maxdiff(got, want) < 1e-6 and got[0, 0, 2] == 0 and abs(got.sum().item() - 1) < 1e-6


def test_more_smooth_mixes_code_vectors(gen):
    labels = torch.tensor([3, 7])
    kw = dict(cfg=3.0, top_k=16, top_p=0.9, seed=0, return_codes=True)
    plain, plain_codes = gen.generate(labels, **kw)
    smooth, codes = gen.generate(labels, more_smooth=True, **kw)
    again, _ = gen.generate(labels, more_smooth=True, **kw)
    assert torch.equal(smooth, again) and -1 <= smooth.min() and smooth.max() <= 1
    assert torch.equal(codes[0][0], plain_codes[0][0])  # the first scale draws its codes with the same numbers
    assert maxdiff(smooth, plain) > 1e-3
    # the image is not the decoding of its drawn codes: every scale added a mixture of code vectors
    assert maxdiff(gen.tokenizer.decode(codes), smooth) > 1e-3
    alone = gen.generate(labels[1:], indices=[1], more_smooth=True, cfg=3.0, top_k=16, top_p=0.9, seed=0)
    assert maxdiff(alone[0], smooth[1]) < 1e-4


# --- strict loading: one-line errors naming the key ----------------------------------------------------------------
def _tampered(tmp_path: Path, src: Path, edit) -> Path:
    sd = _state(src)
    edit(sd)
    out = tmp_path / f"tampered-{src.name}"
    torch.save(sd, out)
    return out


def _error(fn) -> str:
    with pytest.raises(imf.CheckpointError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_tokenizer_and_swapped_files_are_one_line_errors():
    assert "vae_ch160v4096z32.pth" in _error(lambda: imf.load_generator(VAR))
    assert "holds no tokenizer" in _error(lambda: imf.load_tokenizer(VAR))
    assert "not a generator" in _error(lambda: imf.load_generator(VAE))
    with_wrong_scales = imf.tokenizer_preset("var-vqvae-tiny", v_patch_nums=(1, 2, 4), start_drop=1)
    assert "scales" in _error(lambda: imf.load_generator(VAR, tokenizer=imf.Tokenizer(with_wrong_scales)))


@pytest.mark.parametrize("edit,needle", [
    (lambda sd: sd.pop("blocks.1.ffn.fc2.weight"), "blocks.1.ffn.fc2.weight"),
    (lambda sd: sd.__setitem__("blocks.0.attn.extra", torch.zeros(1)), "blocks.0.attn.extra"),
    (lambda sd: sd.__setitem__("head.bias", torch.zeros(65)), "head.bias"),
    (lambda sd: sd["attn_bias_for_masking"].fill_(0), "attn_bias_for_masking"),
    (lambda sd: sd["blocks.1.attn.zero_k_bias"].fill_(1), "zero_k_bias"),
])
def test_generator_file_is_loaded_strictly(tmp_path, edit, needle):
    path = _tampered(tmp_path, VAR, edit)
    assert needle in _error(lambda: imf.load_generator(path, tokenizer=VAE))


@pytest.mark.parametrize("edit,needle", [
    (lambda sd: sd.pop("decoder.up.1.block.0.conv1.weight"), "decoder.up.1.block.0.conv1.weight"),
    (lambda sd: sd.__setitem__("encoder.mid.attn_1.qkv.weight", torch.zeros(3 * 128 + 3, 128, 1, 1)),
     "encoder.mid.attn_1.qkv.weight"),
    (lambda sd: sd.__setitem__("decoder.mid.attn_1.qkv.bias", torch.zeros(3 * 64)), "decoder.mid.attn_1.qkv.bias"),
    (lambda sd: sd.__setitem__("quantize.extra", torch.zeros(1)), "quantize.extra"),
    (lambda sd: sd.__setitem__("post_quant_conv.weight", torch.zeros(8, 8, 1, 1)), "post_quant_conv.weight"),
])
def test_vqvae_file_is_loaded_strictly(tmp_path, edit, needle):
    path = _tampered(tmp_path, VAE, edit)
    assert needle in _error(lambda: imf.load_tokenizer(path, v_patch_nums=TINY_PN))


def test_usage_statistics_of_another_scale_count_are_ignored_as_var_does(tmp_path, ref):
    path = _tampered(tmp_path, VAE, lambda sd: sd.__setitem__("quantize.ema_vocab_hit_SV", torch.ones(10, 64)))
    tok = imf.load_tokenizer(path, v_patch_nums=TINY_PN)
    assert torch.equal(tok.quantizes[0].ema_vocab_hit_SV, torch.zeros(4, 64))
    assert torch.equal(tok.encode(ref["x"])[0][3], ref["idx_Bl"][3])


# --- conversion both ways ------------------------------------------------------------------------------------------
def test_release_round_trips_through_our_format(tmp_path, ref):
    kind, ours = imf.convert(VAR, tmp_path / "ours", tokenizer=VAE)
    assert kind == "generator"
    gen = imf.load_generator(ours)
    with torch.no_grad():
        assert maxdiff(gen(ref["labels"], [ref["idx_Bl"]]), ref["var_logits"]) < TOL
    kind, back = imf.convert(ours, tmp_path / "release" / "var_d2.pth")
    assert kind == "generator" and back == tmp_path / "release" / "var_d2.pth"
    vq_path = release_vqvae_path(back, gen.tokenizer)
    assert vq_path.name == "vae_ch32v64z8.pth"
    for written, original in ((back, VAR), (vq_path, VAE)):
        a, b = _state(written), _state(original)
        assert list(a) == list(b) or set(a) == set(b)
        for k in b:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), (written.name, k)


def test_vqvae_round_trips_and_refuses_the_imagefolder_format(tmp_path):
    kind, ours = imf.convert(VAE, tmp_path / "tok", tokenizer="var-vqvae-tiny")
    assert kind == "tokenizer" and imf.load_tokenizer(ours).config == imf.tokenizer_preset("var-vqvae-tiny")
    _, back = imf.convert(ours, tmp_path / "vae.pth")
    a, b = _state(back), _state(VAE)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in b)
    assert "quant_conv" in _error(lambda: imf.convert(ours, tmp_path / "x.pt", format="imagefolder"))


# --- command line ----------------------------------------------------------------------------------------------------
def test_cli_sample_with_the_release_and_more_smooth(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["sample", "--generator", str(VAR), "--tokenizer", str(VAE), "--classes", "3,7", "--cfg", "4",
            "--top-k", "16", "--top-p", "0.95", "--out", str(out)]
    assert main(argv + ["--more-smooth"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["000000_class0003.png", "000001_class0007.png", "grid.png"]
    capsys.readouterr()
    assert main(["sample", "--generator", str(VAR), "--classes", "3", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--tokenizer" in err


def test_cli_help_explains_more_smooth(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--more-smooth" in text and "Gumbel-softmax" in text and "VAR's VQVAE" in text


def test_cli_reconstruct_and_convert_with_the_release(tmp_path, capsys):
    assert main(["reconstruct", "--tokenizer", str(VAE), "--builtin", "2", "--out", str(tmp_path / "r"),
                 "--progression", "1", "--grid", "2"]) == 0
    assert (tmp_path / "r" / "metrics.json").is_file()
    assert main(["convert", str(VAR), "--tokenizer", str(VAE), "--out", str(tmp_path / "g")]) == 0
    assert main(["convert", str(tmp_path / "g"), "--out", str(tmp_path / "rel" / "var.pth")]) == 0
    out = capsys.readouterr().out
    assert "vae_ch32v64z8.pth" in out and (tmp_path / "rel" / "vae_ch32v64z8.pth").is_file()


# --- fine-tuning from a VAR checkpoint --------------------------------------------------------------------------------
def test_train_generator_starts_from_a_var_checkpoint(tmp_path):
    import yaml

    from imagefolder.data.builtin import write_builtin_images
    write_builtin_images(tmp_path / "data" / "train", 4, 64)
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(yaml.safe_dump(dict(data_path=str(tmp_path / "data"), global_batch_size=4, epochs=1, lr=1e-3,
                                       warmup_steps=1, num_workers=0, log_every=1, ckpt_every=1000, val_every=0,
                                       tensorboard=False, ema=False, val_samples=0)))
    base = ["train-generator", "--config", str(cfg), "--var-ckpt", str(VAR), "--tokenizer", str(VAE),
            "--no-progress", "--max-steps", "2"]
    assert main(base + ["--out", str(tmp_path / "run")]) == 0
    tuned = imf.load_generator(tmp_path / "run" / "last")
    start = imf.load_generator(VAR, tokenizer=VAE)
    assert tuned.config.depth == 2 and tuned.num_classes == 10 and tuned.tokenizer.config == start.tokenizer.config
    a, b = to_official_state_dict(tuned), _state(VAR)
    diffs = [maxdiff(a[k], b[k]) for k in b if b[k].is_floating_point()]
    assert 0 < max(diffs) < 0.05  # it moved, from the checkpoint's weights (a random start differs by far more)
    assert main(base + ["--out", str(tmp_path / "bad"), "--depth", "3"]) == 2


class _Payload:
    """Stands for any object a malicious pickle could ask to build."""


def test_a_release_file_that_asks_to_build_objects_is_refused(tmp_path):
    path = tmp_path / "var_d16.pth"
    torch.save({"class_emb.weight": torch.zeros(2, 4), "word_embed.weight": torch.zeros(4, 2),
                "blocks.0.attn.q_bias": torch.zeros(4), "extra": _Payload()}, path)
    msg = _error(lambda: imf.load_generator(path, tokenizer="var-vqvae-tiny"))
    assert "refused" in msg
