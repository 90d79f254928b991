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
    proc = _popen(["train-tokenizer", "--config", cfg, "--out", str(out), "--no-progress"], subprocess.PIPE)
    metrics = out / "metrics.jsonl"  # stopped once it has made a few steps
    err = _stop_when(proc, lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2, sig, seconds=180)
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


def test_a_signal_during_the_last_step_is_not_lost(data, tmp_path, monkeypatch):
    """SIGINT noted during the last step (after the loop's last look at the flag): the finished run is saved, then
    the signal acts (KeyboardInterrupt), so a command of several stages does not go on to the next one."""
    trainer = _trainer(data, tmp_path / "run", max_steps=3)
    one_step = TokenizerTrainer._one_step

    def step_then_signal(self, batches, bar):
        done = one_step(self, batches, bar)
        if self.step == 3:
            signal.raise_signal(signal.SIGINT)  # the training handler only notes it
        return done

    monkeypatch.setattr(TokenizerTrainer, "_one_step", step_then_signal)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (see _default_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert load_train_state(Checkpoints(tmp_path / "run").latest())["step"] == 3
    assert (tmp_path / "run" / "last" / "model.safetensors").is_file()


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
    from imagefolder.train.generator_trainer import GeneratorTrainer
    from imagefolder.train.options import GENERATOR_ACCEPTED_ONLY, GeneratorTrainOptions, generator_config, load_options

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


# demo and ablate: stopped like a trainer (exit 128 + signal, one line, the running trainer's checkpoint saved) -----
def _default_sigint() -> None:
    """In the child before exec: SIGINT as in a terminal. A suite started in the background by a non-interactive
    shell inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen(argv, stdout, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "imagefolder", *argv], stdout=stdout, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=_default_sigint)


def _wait_for(proc, ready, seconds=240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not ready() and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()
    assert ready(), "the process did not get there in time"


def _stop_when(proc, ready, sig, settle=0.0, seconds=240) -> str:
    """Wait until ``ready()``, then ``settle`` seconds more, send ``sig``, wait for the exit; the process's stderr."""
    try:
        _wait_for(proc, ready, seconds)
        time.sleep(settle)
        proc.send_signal(sig)
        return proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_demo_stopped_by_sigterm_while_training_exits_like_the_trainer(tmp_path):
    out = tmp_path / "demo"
    proc = _popen(["demo", "--train", "--quick", "--classifier-epochs", "1", "--teacher-epochs", "1",
                   "--tokenizer-steps", "100000", "--generator-steps", "1", "--device", "cpu", "--no-progress",
                   "--out", str(out)], subprocess.DEVNULL)
    metrics = out / "tokenizer" / "metrics.jsonl"
    err = _stop_when(proc, lambda: metrics.exists() and metrics.read_text().strip() != "",  # inside the training loop
                     signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stopped by SIGTERM while training the tokenizer at step" in lines[0], err
    latest = Checkpoints(out / "tokenizer").latest()
    assert latest is not None and str(latest) in lines[0] and load_train_state(latest)["step"] >= 10
    assert "starts afresh" in lines[0] and "error" not in lines[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ablate_stopped_outside_a_trainer_exits_with_128_plus_the_signal(tmp_path, sig):
    """In the shared stage (the dataset, then the judge): no traceback, no 'error', the exit status of the signal."""
    log, out = tmp_path / "stdout.txt", tmp_path / "abl"
    with open(log, "w") as stdout:
        proc = _popen(["ablate", "--rows", "1", "--tokenizer-steps", "1", "--generator-steps", "1", "--device", "cpu",
                       "--no-progress", "--out", str(out)], stdout)
        err = _stop_when(proc, lambda: "[shared]" in log.read_text(), sig, settle=1.0)
    assert proc.returncode == 128 + sig, err
    assert err.strip().splitlines() == [f"imagefolder ablate: stopped by {signal.Signals(sig).name}"]
    assert not [p for p in out.rglob("*.tmp")]


def test_a_trainer_interrupted_inside_ablate_names_its_checkpoint_and_how_to_continue(monkeypatch, tmp_path, capsys):
    """What ablate reports when the SIGTERM came during one of its trainers (that path in a real process is the
    demo's test above; a real ablate reaches its first trainer only after its judge and teacher, minutes)."""
    from imagefolder.ablation import run as ablation_run
    from imagefolder.train.engine import Interrupted

    def interrupted(settings):
        raise Interrupted("stopped by SIGTERM at step 3; ...", int(signal.SIGTERM), kind="tokenizer", step=3,
                          checkpoint=tmp_path / "row1" / "tokenizer" / "checkpoints" / "step-00000003.pt")

    monkeypatch.setattr(ablation_run, "run_ablation", interrupted)
    assert main(["ablate", "--rows", "1", "--out", str(tmp_path), "--device", "cpu"]) == 128 + signal.SIGTERM
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"imagefolder ablate: stopped by SIGTERM while training the tokenizer at step 3 (checkpoint "
                     f"{tmp_path}/row1/tokenizer/checkpoints/step-00000003.pt written); the same command continues "
                     "the ablation (finished stages are kept, this one starts over)"]


def test_kill_9_during_a_checkpoint_write_keeps_the_previous_one_and_the_next_start_cleans_up(data, tmp_path):
    """A real process writes a large checkpoint through Checkpoints.save (atomic_write) and is killed with SIGKILL
    while its temporary file grows: the previous checkpoint still loads, --resume auto picks it, and the next
    start of the trainer removes the orphaned .tmp."""
    cfg, out = _cfg(tmp_path, data, ckpt_every=1), tmp_path / "run"
    assert _train(cfg, out, "--max-steps", 1) == 0
    previous = Checkpoints(out).latest()
    assert previous.name == "step-00000001.pt"
    writer = ("import sys, torch\n"
              "from imagefolder.train.state import Checkpoints, load_train_state\n"
              "ckpts = Checkpoints(sys.argv[1])\n"
              "state = load_train_state(ckpts.latest())\n"
              "state['ballast'] = torch.ones(96 * 2**20)  # 384 MiB: a write that takes a while\n"
              "print('writing', flush=True)\n"
              "ckpts.save(2, state)\n"
              "print('written', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", writer, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        deadline, partial = time.time() + 60, []
        while time.time() < deadline and proc.poll() is None:
            partial = [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
            if partial and partial[0].stat().st_size > 2**20:  # a part of it is on disk
                break
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert partial and partial[0].exists(), "the kill came after the write had finished"
    assert partial[0].name.startswith(".step-00000002.pt.") and not Checkpoints(out).path(2).exists()
    assert 2**20 < partial[0].stat().st_size < 96 * 2**22  # half-written
    # the previous checkpoint is intact and is the one --resume auto continues; the next start removes the .tmp
    assert Checkpoints(out).latest() == previous and load_train_state(previous)["step"] == 1
    assert _train(cfg, out, "--resume", "auto", "--max-steps", 2) == 0
    assert not partial[0].exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000001.pt", "step-00000002.pt"]
    assert load_train_state(Checkpoints(out).latest())["step"] == 2
    assert "left by an interrupted write" in (out / "log.txt").read_text()
