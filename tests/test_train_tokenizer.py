"""Tokenizer training: runs, losses fall, resume is bit-identical, non-finite steps are skipped, checkpoints are
atomic, unreadable files are skipped, the official config is accepted."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imagefolder.cli import main
from imagefolder.config import ConfigError
from imagefolder.distributed import DistInfo
from imagefolder.loading import load_tokenizer
from imagefolder.train.engine import TrainingError
from imagefolder.train.options import TOKENIZER_ACCEPTED_ONLY, TokenizerTrainOptions, load_options, parse_overrides
from imagefolder.train.state import Checkpoints, load_train_state
from imagefolder.train.tokenizer_trainer import TokenizerTrainer

from _train_helpers import TINY_CNN_TOKENIZER, TINY_TOKENIZER, make_image_folder, make_shapes, yaml_text

REF = Path(__file__).parent / "data"
CPU = DistInfo(0, 1, 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    make_image_folder(root / "train")
    make_image_folder(root / "val", per_class=2, seed=1)
    return root


def _trainer(data, out, resume=None, **over):
    opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, None,
                               {**TINY_TOKENIZER, "data_path": str(data / "train"), **over})
    return TokenizerTrainer(opts, model, out, CPU, resume=resume, show_progress=False)


def _weights(path):
    return load_file(Path(path) / "model.safetensors")


def test_cli_trains_and_writes_a_loadable_model(data, tmp_path):
    cfg = tmp_path / "tok.yaml"
    cfg.write_text(yaml_text({**TINY_TOKENIZER, "data_path": str(data / "train"), "val_data_path": str(data / "val"),
                              "val_every": 5}))
    out = tmp_path / "run"
    assert main(["train-tokenizer", "--config", str(cfg), "--out", str(out), "--max-steps", "6", "--no-progress",
                 "--lr", "2e-3"]) == 0
    tok = load_tokenizer(out / "last")
    assert tok.config.image_size == 16 and tok.config.v_patch_nums == (1, 2)
    assert (out / "best" / "model.safetensors").is_file() and Checkpoints(out).latest().name == "step-00000006.pt"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val"]
    assert val and {"psnr", "ssim", "usage", "usage_b1_s1"} <= set(val[-1])
    assert [r for r in rows if r["split"] == "train"][0]["lr"] == pytest.approx(1e-3)  # warm-up step 1 of 2


def test_losses_fall_on_the_built_in_shapes(tmp_path):
    data = make_shapes(tmp_path / "shapes")
    summary = _trainer(data, tmp_path, max_steps=40).fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["rec"] for r in rows[:5]) / 5
    last = sum(r["rec"] for r in rows[-5:]) / 5
    assert summary["steps"] == 40 and last < 0.7 * first


@pytest.mark.parametrize("encoder", ["vit", "cnn"])
def test_resume_is_bit_identical(data, tmp_path, encoder):
    over = dict(disc_type="patchgan", disc_num_layers=1, disc_dim=8, disc_start=1, lecam_loss_weight=0.01,
                disc_adaptive_weight=True, codebook_drop=0.5)
    if encoder == "cnn":
        over.update({k: v for k, v in TINY_CNN_TOKENIZER.items() if k not in TINY_TOKENIZER or k == "model_preset"})
    _trainer(data, tmp_path / "straight", max_steps=6, **over).fit()
    _trainer(data, tmp_path / "split", max_steps=3, **over).fit()
    latest = Checkpoints(tmp_path / "split").latest()
    assert load_train_state(latest)["step"] == 3
    _trainer(data, tmp_path / "split", resume=latest, max_steps=6, **over).fit()
    a, b = _weights(tmp_path / "straight" / "last"), _weights(tmp_path / "split" / "last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = load_train_state(Checkpoints(tmp_path / "straight").latest())["models"]
    sb = load_train_state(Checkpoints(tmp_path / "split").latest())["models"]
    for part in ("tokenizer", "disc"):
        assert all(torch.equal(sa[part][k], sb[part][k]) for k in sa[part])


def test_nonfinite_steps_are_skipped_then_the_run_stops(data, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = TokenizerTrainer._rec_loss

    def sometimes_nan(self, recon, x):
        calls["n"] += 1
        loss = original(self, recon, x)
        return loss * float("nan") if calls["n"] in (2, 3) else loss

    monkeypatch.setattr(TokenizerTrainer, "_rec_loss", sometimes_nan)
    summary = _trainer(data, tmp_path / "a", max_steps=5).fit()
    assert summary["nonfinite_skipped"] == 2
    w = _weights(tmp_path / "a" / "last")
    assert all(torch.isfinite(v).all() for v in w.values() if v.is_floating_point())

    monkeypatch.setattr(TokenizerTrainer, "_rec_loss", lambda self, r, x: original(self, r, x) * float("nan"))
    with pytest.raises(TrainingError, match="non-finite"):
        _trainer(data, tmp_path / "b", max_steps=10, max_nonfinite=3, ckpt_every=1).fit()
    saved = Checkpoints(tmp_path / "b").all()  # steps 1 and 2 were skipped, so their weights are the initial ones
    assert [p.name for p in saved] == ["step-00000001.pt", "step-00000002.pt"]
    for p in saved:
        tensors = load_train_state(p)["models"]["tokenizer"].values()
        assert all(torch.isfinite(v).all() for v in tensors if v.is_floating_point())


def test_a_failed_checkpoint_write_keeps_the_previous_one(data, tmp_path, monkeypatch):
    _trainer(data, tmp_path, max_steps=2, ckpt_every=1).fit()
    before = Checkpoints(tmp_path).latest()

    def half_write(obj, f):  # the checkpoint goes through a Python file object
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(OSError):
        Checkpoints(tmp_path).save(3, {"format": "imagefolder-train"})
    assert Checkpoints(tmp_path).latest() == before
    assert load_train_state(before)["step"] == 2
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_unreadable_files_are_skipped_and_logged(data, tmp_path):
    import shutil
    root = tmp_path / "d"
    shutil.copytree(data / "train", root / "train")
    (root / "train" / "class0" / "broken.png").write_bytes(b"not a png")
    summary = _trainer(root, tmp_path / "run", max_steps=4).fit()
    assert summary["bad_files"] >= 1
    assert "broken.png" in (tmp_path / "run" / "log.txt").read_text()


def test_lora_and_frozen_tuning_export_plain_weights(data, tmp_path):
    t = _trainer(data, tmp_path, max_steps=2, enc_tuning_method="lora", dec_tuning_method="frozen", lora_r=2)
    t.fit()
    trainable = {n for n, p in t.tok.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and not any(n.startswith("decoder.model.blocks") for n in trainable)
    tok = load_tokenizer(tmp_path / "last")  # the merged, plain layout
    assert not any("lora" in k for k in tok.state_dict())


@pytest.mark.parametrize("encoder", ["vit", "cnn"])
def test_freeze_codes_trains_only_the_decoder_and_keeps_every_code(data, tmp_path, encoder):
    extra = TINY_CNN_TOKENIZER if encoder == "cnn" else {}
    _trainer(data, tmp_path / "base", max_steps=2, **extra).fit()
    with pytest.raises(ConfigError, match="freeze_codes .* vq_ckpt"):
        _trainer(data, tmp_path / "x", max_steps=1, freeze_codes=True, **extra)
    t = _trainer(data, tmp_path / "tune", max_steps=2, freeze_codes=True, vq_ckpt=str(tmp_path / "base" / "last"),
                 **{**extra, "lr": 1e-2})
    t.fit()
    trainable = {n.split(".")[0] for n, p in t.tok.named_parameters() if p.requires_grad}
    assert trainable == {"decoder", "post_quant_conv"}
    before, after = _weights(tmp_path / "base" / "last"), _weights(tmp_path / "tune" / "last")
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"decoder", "post_quant_conv", "quantizes"}  # quantizes: only the code-usage statistics
    assert all(k.endswith("ema_vocab_hit_SV") for k in before if k.startswith("quantizes")
               and not torch.equal(before[k], after[k]))
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    codes = [load_tokenizer(tmp_path / run / "last").encode(x) for run in ("base", "tune")]
    assert all(torch.equal(a, b) for ba, bb in zip(*codes) for a, b in zip(ba, bb))


def test_official_config_is_accepted_and_unknown_keys_are_named():
    opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY,
                               REF / "official-tokenizer.yaml", {"data_path": "x"})
    assert (opts.lr, opts.disc_type, opts.disc_epoch_start, opts.lecam_loss_weight) == (3e-5, "dinodisc", 56, 0.001)
    assert (model.codebook_size, model.num_latent_tokens, model.v_patch_nums[-1], model.half_sem) == (4096, 121, 11, True)
    with pytest.raises(ConfigError, match=r"codebok_size \(did you mean codebook_size\?\)"):
        load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, None, {"codebok_size": 8})
    with pytest.raises(ConfigError, match="enc_type must be 'dinov2'"):
        load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, None, {"enc_type": "unet"})
    with pytest.raises(ConfigError, match="lfq: only False"):
        load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, None, {"lfq": True})
    with pytest.raises(ConfigError, match="disc_type"):
        load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, None, {"disc_type": "unet"})
    with pytest.raises(ConfigError, match="perceptual_net must be lpips or classifier:DIR"):
        load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, None, {"perceptual_net": "vgg"})
    assert parse_overrides(["--global-batch-size", "8", "--ema=false", "--v-patch-nums", "[1, 2]"]) == \
        {"global_batch_size": 8, "ema": False, "v_patch_nums": [1, 2]}


def test_cli_errors_are_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lrr: 1\n")
    assert main(["train-tokenizer", "--config", str(cfg)]) == 2
    assert "lrr (did you mean lr?)" in capsys.readouterr().err
    assert main(["train-tokenizer", "--data-path", str(tmp_path / "missing"), "--model-preset", "tiny",
                 "--pretrained-backbone", "false", "--out", str(tmp_path / "o")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_a_classifier_guide_without_a_teacher_is_refused_when_options_are_read(data, tmp_path):
    with pytest.raises(ConfigError, match="needs semantic_teacher"):
        _trainer(data, tmp_path / "run", semantic_guide="classifier")
    assert not (tmp_path / "run").exists()


def test_classifier_teacher_regularises_a_branch(data, tmp_path):
    from imagefolder.models.classifier import ClassifierConfig, DomainClassifier, save_classifier
    teacher = DomainClassifier(ClassifierConfig(image_size=16, num_classes=2, width=8, depth=3))  # 32-d features
    save_classifier(teacher, ["class0", "class1"], tmp_path / "teacher")
    t = _trainer(data, tmp_path / "run", max_steps=3, semantic_guide="classifier",
                 semantic_teacher=str(tmp_path / "teacher"), half_sem=True, val_data_path=str(data / "val"),
                 val_every=3, rfid_features=f"domain:{tmp_path / 'teacher'}", perceptual_weight=0.1,
                 perceptual_net=f"classifier:{tmp_path / 'teacher'}", log_every=1)
    assert t.run_config()["model"]["teacher"] == teacher.config.to_dict()  # resolved before the run logs it
    summary = t.fit()
    assert summary["last_val"]["rfid"] >= 0  # in the teacher's feature space
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 3 and all(r["semantic"] > 0 and r["perceptual"] > 0 for r in train_rows)
    tok = load_tokenizer(tmp_path / "run" / "last")
    assert tok.config.teacher["width"] == 8
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in tok.semantic_model.state_dict().items())
    # fine-tuning that model (vq_ckpt) needs no teacher path: the teacher comes with the weights
    t2 = _trainer(data, tmp_path / "tune", max_steps=1, semantic_guide="classifier", vq_ckpt=str(tmp_path / "run" / "last"))
    assert t2.model_config.teacher == tok.config.teacher
    config = t2.model_config
    t2.fit()
    assert t2.model_config is config  # the trainer never replaces its configuration


def test_time_budget_stops_the_run(data, tmp_path):
    summary = _trainer(data, tmp_path, max_steps=10_000, time_budget_minutes=0.02).fit()
    assert 1 <= summary["steps"] < 10_000 and summary["seconds"] < 30
    assert "time budget" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize("codes", [4096, 8192, 16384])
def test_full_size_recipes_match_the_released_models_and_run_a_step(codes, data, tmp_path):
    from imagefolder.config import tokenizer_preset
    recipe = Path(__file__).parents[1] / "configs" / f"tokenizer-{codes}.yaml"
    opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, recipe, {})
    assert model == tokenizer_preset(f"imagefolder-{codes}")  # the exact released architecture
    assert (opts.global_batch_size, opts.disc_type, opts.lr) == (1024, "dinodisc", 3e-5)
    if codes != 4096:
        return
    # the same recipe at a toy size (no downloads): every loss and the dinodisc discriminator run one step
    small = {"data_path": str(data / "train"), "image_size": 16, "patch_size": 4, "global_batch_size": 4,
             "vit_kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2}, "pretrained_backbone": False,
             "disc_pretrained": False, "perceptual_weights": "random", "disc_start": 0, "mixed_precision": "none",
             "num_workers": 0, "max_steps": 1, "tensorboard": False, "rfid_features": "none", "val_every": 0}
    opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, recipe, small)
    t = TokenizerTrainer(opts, model, tmp_path, CPU, show_progress=False)
    summary = t.fit()
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert summary["steps"] == 1 and {"perceptual", "gen_adv", "disc", "lecam", "semantic"} <= set(row)
    assert t.model_config.v_patch_nums == (1, 1, 2, 3, 3, 4, 5, 6, 8, 11) and t.model_config.num_latent_tokens == 121


def test_conv_recipes_are_the_presets_and_the_full_one_runs_every_loss(data, tmp_path):
    from imagefolder.config import tokenizer_preset
    configs = Path(__file__).parents[1] / "configs"
    opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, configs / "cnn-small-tokenizer.yaml", {})
    assert model == tokenizer_preset("cnn-small")
    recipe = configs / "cnn-tokenizer-4096.yaml"
    opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, recipe, {})
    assert model == tokenizer_preset("cnn-4096") and model.encoder_ch_mult == (1, 1, 2, 2, 4)  # from vq_model
    with pytest.raises(ConfigError, match="lora adapts the MLPs of a ViT"):
        load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, recipe, {"enc_tuning_method": "lora"})
    # the same recipe at a toy size (no downloads): every loss runs one step on the conv network
    small = {"data_path": str(data / "train"), "image_size": 16, "ch": 32, "encoder_ch_mult": [1, 1],
             "decoder_ch_mult": [1, 1], "z_channels": 16, "num_latent_tokens": 64, "v_patch_nums": [1, 2, 4, 8],
             "global_batch_size": 4, "pretrained_backbone": False, "perceptual_weights": "random", "disc_start": 0,
             "disc_num_layers": 1, "disc_dim": 8, "disc_adaptive_weight": True, "mixed_precision": "none",
             "num_workers": 0, "max_steps": 1, "tensorboard": False, "rfid_features": "none", "val_every": 0,
             "patch_size": 4, "vit_kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2}}  # the dinov2 teacher
    opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, recipe, small)
    t = TokenizerTrainer(opts, model, tmp_path, CPU, show_progress=False)
    summary = t.fit()
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert summary["steps"] == 1 and {"perceptual", "gen_adv", "disc", "lecam", "semantic"} <= set(row)
    assert tuple(t.tok.sem_linear.weight.shape) == (32, 32)  # teacher width 32 -> the semantic branch's 32 channels
