"""Fault injection, training runs: a used --out, exact resume from a checkpoint taken mid-run, SIGTERM / SIGINT
in a real process, orphaned temporary files, runs of non-finite steps, a changed model on resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imagefolder.cli import main
from imagefolder.distributed import DistInfo
from imagefolder.train.engine import TrainingError
from imagefolder.train.options import TOKENIZER_ACCEPTED_ONLY, TokenizerTrainOptions, load_options
from imagefolder.train.state import Checkpoints, load_train_state
from imagefolder.train.tokenizer_trainer import TokenizerTrainer

from _train_helpers import TINY_TOKENIZER, make_image_folder, yaml_text

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs") / "train")


def _trainer(data, out, resume=None, **over):
    opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, None,
                               {**TINY_TOKENIZER, "data_path": str(data), **over})
    return TokenizerTrainer(opts, model, out, CPU, resume=resume, show_progress=False)


def _cfg(tmp_path, data, **over) -> str:
    path = tmp_path / "tok.yaml"
    path.write_text(yaml_text({**TINY_TOKENIZER, "data_path": str(data), **over}))
    return str(path)


def _train(cfg, out, *extra) -> int:
    return main(["train-tokenizer", "--config", cfg, "--out", str(out), "--no-progress", *map(str, extra)])


def _weights(path):
    return load_file(Path(path) / "model.safetensors")


def test_a_used_out_is_refused_unless_resume_or_overwrite(data, tmp_path, capsys):
    cfg, out = _cfg(tmp_path, data, ckpt_every=1), tmp_path / "run"
    assert _train(cfg, out, "--max-steps", 3) == 0
    capsys.readouterr()
    assert _train(cfg, out, "--max-steps", 1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not empty" in err[0] and "--overwrite" in err[0] and "--resume auto" in err[0]
    assert Checkpoints(out).latest().name == "step-00000003.pt"  # untouched
    assert _train(cfg, out, "--max-steps", 1, "--resume", "auto", "--overwrite") == 2
    # --overwrite starts afresh: none of the earlier run's checkpoints can be picked by --resume auto later
    assert _train(cfg, out, "--max-steps", 1, "--overwrite") == 0
    assert [p.name for p in Checkpoints(out).all()] == ["step-00000001.pt"]
    assert _train(cfg, out, "--max-steps", 2, "--resume", "auto") == 0
    assert load_train_state(Checkpoints(out).latest())["step"] == 2
    # an --out that is a file, and a folder with a model but no checkpoint to resume
    (tmp_path / "file").write_text("x")
    assert _train(cfg, tmp_path / "file") == 2
    assert "is a file" in capsys.readouterr().err
    (tmp_path / "exported" / "last").mkdir(parents=True)
    assert _train(cfg, tmp_path / "exported", "--resume", "auto") == 2
    assert "no training checkpoint" in capsys.readouterr().err
    # the trainer itself never starts a new run over an earlier run's checkpoints
    with pytest.raises(TrainingError, match="checkpoints of an earlier run"):
        _trainer(data, out, max_steps=1)
    # nor continues another run's checkpoint among them (its steps would interleave with theirs)
    assert _train(cfg, tmp_path / "other", "--max-steps", 1) == 0
    with pytest.raises(TrainingError, match="checkpoints of another run"):
        _trainer(data, out, resume=Checkpoints(tmp_path / "other").latest(), max_steps=2)


def test_resume_from_a_checkpoint_taken_mid_run_is_bit_identical(data, tmp_path):
    """The checkpoint at step 2 is followed in the straight run by exports of last/ (and steps with quantizer
    dropout drawing from the global stream): resuming from it must still give the same weights."""
    over = dict(codebook_drop=0.5, start_drop=1, ckpt_every=2, keep_checkpoints=10, max_steps=6)
    _trainer(data, tmp_path / "straight", **over).fit()
    mid = Checkpoints(tmp_path / "straight").path(2)
    assert mid.is_file()
    _trainer(data, tmp_path / "resumed", resume=mid, **over).fit()
    a, b = _weights(tmp_path / "straight" / "last"), _weights(tmp_path / "resumed" / "last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = load_train_state(Checkpoints(tmp_path / "straight").latest())["models"]["tokenizer"]
    sb = load_train_state(Checkpoints(tmp_path / "resumed").latest())["models"]["tokenizer"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_resumable_checkpoint_and_exits_cleanly(data, tmp_path, sig):
    out = tmp_path / "run"
    cfg = _cfg(tmp_path, data, epochs=100000, ckpt_every=100000)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "imagefolder", "train-tokenizer", "--config", cfg, "--out",
                             str(out), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:  # wait until it has made a few steps
            rows = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
            if len(rows) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"stopped by {signal.Signals(sig).name}" in lines[0] and "--resume auto" in lines[0]
    latest = Checkpoints(out).latest()
    step = load_train_state(latest)["step"]
    assert step >= 2 and latest.name == f"step-{step:08d}.pt" and (out / "last" / "model.safetensors").is_file()
    # an orphaned temporary file (a write killed half-way) is removed when the run continues
    orphan = out / "checkpoints" / f".step-{step + 1:08d}.pt.abc123.tmp"
    orphan.write_bytes(b"half")
    assert _train(cfg, out, "--resume", "auto", "--max-steps", step + 1) == 0
    assert not orphan.exists() and load_train_state(Checkpoints(out).latest())["step"] == step + 1


def test_a_run_of_mostly_nonfinite_steps_fails_and_names_no_best(data, tmp_path, monkeypatch, capsys):
    original = TokenizerTrainer._rec_loss
    calls = {"n": 0}

    def mostly_nan(self, recon, x):
        calls["n"] += 1
        loss = original(self, recon, x)
        return loss if calls["n"] % 4 == 0 else loss * float("nan")

    monkeypatch.setattr(TokenizerTrainer, "_rec_loss", mostly_nan)
    make_image_folder(tmp_path / "val", per_class=1, seed=1)
    cfg = _cfg(tmp_path, data, val_every=4, val_data_path=str(tmp_path / "val"), max_nonfinite=50)
    assert _train(cfg, tmp_path / "run", "--max-steps", 8) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "of 8 steps were skipped as non-finite" in err[0]
    assert "best" not in captured.out


def test_a_changed_model_on_resume_is_one_line(data, tmp_path, capsys):
    cfg, out = _cfg(tmp_path, data), tmp_path / "run"
    assert _train(cfg, out, "--max-steps", 1) == 0
    capsys.readouterr()
    assert _train(cfg, out, "--max-steps", 2, "--resume", "auto", "--codebook-size", 32) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "codebook_size 16 -> 32" in err[0]
    assert load_train_state(Checkpoints(out).latest())["step"] == 1
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 1


def test_generator_resume_from_a_mid_run_checkpoint_is_bit_identical(tmp_path, tiny_tokenizer):
    """Label dropout (cond_drop_rate) draws from the global stream at every step."""
    from imagefolder.data.builtin import write_builtin_images
    from imagefolder.loading import save_tokenizer
    from imagefolder.train.generator_trainer import GeneratorTrainer, generator_config
    from imagefolder.train.options import GENERATOR_ACCEPTED_ONLY, GeneratorTrainOptions, load_options

    save_tokenizer(tiny_tokenizer, tmp_path / "tok")
    write_builtin_images(tmp_path / "data" / "train", 16, tiny_tokenizer.config.image_size)
    write_builtin_images(tmp_path / "data" / "val", 10, tiny_tokenizer.config.image_size, seed=1)
    values = dict(model_preset="tiny", global_batch_size=8, lr=3e-3, warmup_steps=1, num_workers=0, log_every=1,
                  tensorboard=False, ema_decay=0.9, val_samples=0, tokenizer=str(tmp_path / "tok"),
                  data_path=str(tmp_path / "data"), ckpt_every=2, val_every=2, keep_checkpoints=10, max_steps=5)
    model_vals = dict(depth=1, embed_dim=64, num_heads=2, drop_path_rate=0.0, cond_drop_rate=0.5)
    opts, _ = load_options(GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY, None, {**values, **model_vals})

    def run(out, resume=None):
        GeneratorTrainer(opts, generator_config(opts, model_vals), out, CPU, resume=resume, show_progress=False).fit()

    run(tmp_path / "straight")
    run(tmp_path / "resumed", resume=Checkpoints(tmp_path / "straight").path(2))
    a, b = _weights(tmp_path / "straight" / "last"), _weights(tmp_path / "resumed" / "last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
