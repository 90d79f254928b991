"""Fault injection, command line: one error boundary (expected failures are one line with exit 2, others keep
their traceback), a full disk during checkpoint writes, wrong types in config.json, malformed evaluate inputs,
sample folders holding samples of other settings, non-finite guidance, outputs that are never replaced without
--overwrite."""
from __future__ import annotations

import errno
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import imagefolder as imf
from imagefolder.cli import main
from imagefolder.train.state import Checkpoints, load_train_state

from _train_helpers import TINY_TOKENIZER, make_image_folder, yaml_text


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_the_boundary_keeps_tracebacks_of_unexpected_errors(monkeypatch, capsys):
    from imagefolder.cli import convert

    def boom(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(convert, "run", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["convert", "x", "--out", "y"])

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.bin")

    monkeypatch.setattr(convert, "run", full)
    assert main(["convert", "x", "--out", "y"]) == 2
    assert _one_line(capsys) == ("imagefolder convert: error: /data/out.bin: No space left on device; free some "
                                 "space (a training run continues with --resume auto)")

    def unexpected_os(args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(convert, "run", unexpected_os)
    with pytest.raises(OSError):
        main(["convert", "x", "--out", "y"])


def test_a_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_last_good_one(tmp_path, monkeypatch,
                                                                                        capsys):
    from imagefolder.train import state
    data = make_image_folder(tmp_path / "d")
    cfg = tmp_path / "tok.yaml"
    cfg.write_text(yaml_text({**TINY_TOKENIZER, "data_path": str(data), "ckpt_every": 1}))
    real, calls = state._torch_save, {"n": 0}

    def fills_the_disk(obj, path):
        calls["n"] += 1
        if calls["n"] < 2:
            return real(obj, path)
        with open(path, "wb") as f:  # half a file, then the device is full
            f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state, "_torch_save", fills_the_disk)
    out = tmp_path / "run"
    assert main(["train-tokenizer", "--config", str(cfg), "--out", str(out), "--no-progress", "--max-steps", "4"]) == 2
    line = _one_line(capsys)
    assert "step-00000002.pt: No space left on device" in line and "--resume auto" in line
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000001.pt"]  # no .tmp left behind
    assert load_train_state(Checkpoints(out).latest())["step"] == 1

    # the model export (safetensors): its disk-full error becomes the same OSError naming the file
    from safetensors import SafetensorError

    from imagefolder import checkpoint

    def full_disk(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(OSError) as e:
        imf.save_tokenizer(imf.load_tokenizer("tiny"), tmp_path / "tok")
    assert e.value.errno == errno.ENOSPC and e.value.filename.endswith("model.safetensors")
    assert not list((tmp_path / "tok").iterdir())


def test_a_real_full_file_system(tmp_path):
    """On a 256 KiB tmpfs when this process may mount one (root on Linux); skipped elsewhere."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                                                        capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        from imagefolder.train.state import Checkpoints
        ckpts = Checkpoints(mnt)
        ckpts.save(1, {"format": "imagefolder-train", "w": torch.zeros(1000)})
        with pytest.raises(OSError) as e:
            ckpts.save(2, {"format": "imagefolder-train", "w": torch.zeros(1_000_000)})
        assert e.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as e:
            imf.save_tokenizer(imf.load_tokenizer("tiny"), mnt / "tok")
        assert e.value.errno == errno.ENOSPC and "model.safetensors" in e.value.filename
        assert [p.name for p in (mnt / "checkpoints").iterdir()] == ["step-00000001.pt"]
        assert not [p for p in (mnt / "tok").iterdir() if p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("field, value", [("depth", "two"), ("embed_dim", [64]), ("cond_drop_rate", "x"),
                                          ("tokenizer", 5)])
def test_wrong_types_in_our_config_json_are_one_line(tmp_path, capsys, field, value):
    torch.manual_seed(0)
    gen = imf.save_generator(imf.load_generator("tiny"), tmp_path / "gen")
    meta = json.loads((gen / "config.json").read_text())
    meta["config"][field] = value
    (gen / "config.json").write_text(json.dumps(meta))
    assert main(["sample", "--generator", str(gen), "--classes", "1", "--out", str(tmp_path / "s")]) == 2
    line = _one_line(capsys)
    assert "config.json" in line and field in line


def test_malformed_evaluate_inputs_are_one_line(tmp_path, capsys):
    np.savez(tmp_path / "none.npz", arr_0=np.zeros((0, 16, 16, 3), np.uint8))
    np.savez(tmp_path / "float_labels.npz", arr_0=np.zeros((2, 16, 16, 3), np.uint8), labels=np.array([0.5, 1.5]))
    good = tmp_path / "good.npz"
    np.savez(good, arr_0=np.zeros((2, 16, 16, 3), np.uint8))
    (tmp_path / "outdir").mkdir()
    classifier = Path(imf.__file__).parent / "assets" / "demo" / "classifier"
    for argv, expected in ((["none.npz"], "holds no images"),
                           (["float_labels.npz"], "expected integer class ids"),
                           (["good.npz", "--ref", "none.npz"], "holds no images"),
                           (["good.npz", "--out", "outdir"], "outdir is a folder")):
        argv = [str(tmp_path / a) if a.endswith((".npz", "outdir")) else a for a in argv]
        assert main(["evaluate", *argv, "--no-inception", "--classifier", str(classifier), "--device", "cpu"]) == 2
        assert expected in _one_line(capsys)


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory):
    torch.manual_seed(0)
    return imf.save_generator(imf.load_generator("tiny"), tmp_path_factory.mktemp("gen") / "tiny")


def _sample(gen_dir, out, *extra):
    return main(["sample", "--generator", str(gen_dir), "--classes", "1,2", "--top-k", "16", "--out", str(out),
                 *map(str, extra)])


def test_sample_records_its_settings_and_refuses_or_regenerates_when_they_differ(gen_dir, tmp_path, capsys):
    out = tmp_path / "s"
    assert _sample(gen_dir, out, "--npz") == 0
    first = (out / "000000_class0001.png").stat().st_mtime_ns
    settings = json.loads((out / "sample.json").read_text())
    assert (settings["seed"], settings["cfg"], settings["top_k"], settings["top_p"]) == (0, 3.25, 16, 0.95)
    capsys.readouterr()
    assert _sample(gen_dir, out, "--npz") == 0  # the same settings: nothing to do
    assert "generated 0" in capsys.readouterr().out
    for extra, named in ((["--seed", 1], "seed 0 -> 1"), (["--cfg", 1.5], "cfg 3.25 -> 1.5"),
                         (["--top-p", 0.5], "top_p 0.95 -> 0.5"), (["--joint-sample"], "joint_sample"),
                         (["--temperature", 0.5], "temperature 1.0 -> 0.5"), (["--compile"], "compile False -> True")):
        assert _sample(gen_dir, out, *extra) == 2
        line = _one_line(capsys)
        assert named in line and "--overwrite" in line
    assert (out / "000000_class0001.png").stat().st_mtime_ns == first  # nothing was replaced or mixed in
    torch.manual_seed(1)
    other = imf.save_generator(imf.load_generator("tiny"), tmp_path / "other")
    assert _sample(other, out) == 2
    assert "the generator's weights" in _one_line(capsys)
    capsys.readouterr()
    assert _sample(gen_dir, out, "--seed", 1, "--overwrite", "--npz") == 0
    assert "generated 2" in capsys.readouterr().out  # made again, not kept
    assert json.loads((out / "sample.json").read_text())["seed"] == 1
    npz = np.load(out / "samples.npz")
    assert npz["arr_0"].shape[0] == 2
    # samples made before settings were recorded are not trusted either
    (out / "sample.json").unlink()
    assert _sample(gen_dir, out, "--seed", 1) == 2
    assert "no sample.json" in _one_line(capsys)


def test_a_temperature_recorded_only_when_set_still_counts(gen_dir, tmp_path, capsys):
    out = tmp_path / "s"
    assert _sample(gen_dir, out, "--temperature", 0.5) == 0
    assert json.loads((out / "sample.json").read_text())["temperature"] == 0.5
    capsys.readouterr()  # the progress bar
    assert _sample(gen_dir, out) == 2  # the default 1.0 is not what the samples were made with
    assert "temperature 0.5 -> 1.0" in _one_line(capsys)
    assert _sample(gen_dir, out, "--temperature", 0.5) == 0


@pytest.mark.parametrize("option, value", [("--cfg", "nan"), ("--cfg", "inf"), ("--cfg", "-1"), ("--top-p", "nan"),
                                           ("--top-p", "inf"), ("--top-k", "-1")])
def test_non_finite_guidance_is_refused(gen_dir, tmp_path, capsys, option, value):
    assert _sample(gen_dir, tmp_path / "s", option, value) == 2
    assert option in _one_line(capsys)
    assert main(["complete", str(tmp_path), "--generator", str(gen_dir), "--classes", "1", option, value]) == 2
    assert option in _one_line(capsys)
    gen = imf.load_generator(gen_dir)
    kw = {"cfg": float(value)} if option == "--cfg" else {"top_p": float(value)} if option == "--top-p" else \
        {"top_k": int(value)}
    with pytest.raises(ValueError, match="sampling needs"):
        gen.generate(torch.tensor([1]), **kw)


def test_train_classifier_does_not_overwrite_a_used_out(tmp_path, capsys):
    data = make_image_folder(tmp_path / "d" / "train", per_class=2)
    tok = imf.save_tokenizer(imf.load_tokenizer("tiny"), tmp_path / "tok")
    before = (tok / "model.safetensors").read_bytes()
    argv = ["train-classifier", "--data", str(tmp_path / "d"), "--epochs", "1", "--image-size", "16", "--device", "cpu"]
    assert main([*argv, "--out", str(tok)]) == 2
    assert "holds a tokenizer" in _one_line(capsys) and (tok / "model.safetensors").read_bytes() == before
    (tmp_path / "file").write_text("x")
    assert main([*argv, "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in _one_line(capsys)
    assert main([*argv, "--out", str(tok), "--overwrite"]) == 0
    from imagefolder.models.classifier import load_classifier
    assert load_classifier(tok)[1] == sorted(p.name for p in data.iterdir())


# outputs: an existing one is refused (one line naming it, before any compute, nothing changed) unless --overwrite --
@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    torch.manual_seed(0)
    return imf.save_tokenizer(imf.load_tokenizer("tiny"), tmp_path_factory.mktemp("tok") / "tiny")


def _refused(capsys, path: Path, before: bytes | None = None) -> None:
    line = _one_line(capsys)
    assert str(path) in line and "--overwrite" in line, line
    if before is not None:
        assert path.read_bytes() == before


def test_convert_refuses_an_existing_output_unless_overwrite(tok_dir, tmp_path, capsys):
    official = tmp_path / "tok.pt"
    assert main(["convert", str(tok_dir), "--out", str(official)]) == 0
    before = official.read_bytes()
    assert main(["convert", str(tok_dir), "--out", str(official)]) == 2  # ours -> an existing official file
    _refused(capsys, official, before)
    assert main(["convert", str(tok_dir), "--out", str(official), "--overwrite"]) == 0
    ours = tmp_path / "ours"
    assert main(["convert", str(official), "--out", str(ours)]) == 0
    weights = (ours / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["convert", str(official), "--out", str(ours)]) == 2  # official -> a used folder
    line = _one_line(capsys)
    assert str(ours) in line and "holds a tokenizer" in line and "--overwrite" in line
    assert (ours / "model.safetensors").read_bytes() == weights
    assert main(["convert", str(official), "--out", str(ours), "--overwrite"]) == 0
    (tmp_path / "file").write_text("x")
    assert main(["convert", str(official), "--out", str(tmp_path / "file"), "--overwrite"]) == 2  # not a folder
    assert "is a file" in _one_line(capsys)


def test_convert_refuses_to_replace_a_generators_vqvae_written_beside_it(gen_dir, tmp_path, capsys):
    """VAR's format writes a generator's VQVAE next to it (release_vqvae_path): that file is an output too."""
    from imagefolder.loading import release_vqvae_path
    out = tmp_path / "release" / "var_tiny.pth"
    vqvae = release_vqvae_path(out, imf.load_generator(gen_dir).tokenizer)
    vqvae.parent.mkdir()
    vqvae.write_bytes(b"an earlier VQVAE")
    assert main(["convert", str(gen_dir), "--out", str(out), "--format", "var"]) == 2
    _refused(capsys, vqvae, b"an earlier VQVAE")
    assert not out.exists()


def test_complete_refuses_an_existing_figure_unless_overwrite(gen_dir, tmp_path, capsys):
    pics = make_image_folder(tmp_path / "pics", classes=1, per_class=2)
    out = tmp_path / "fig.png"
    out.write_bytes(b"an earlier figure")
    argv = ["complete", str(pics), "--generator", str(gen_dir), "--classes", "1", "--num", "1", "--top-k", "16",
            "--no-progress", "--out", str(out)]
    assert main(argv) == 2
    _refused(capsys, out, b"an earlier figure")
    assert main([*argv, "--overwrite"]) == 0
    from PIL import Image
    with Image.open(out) as img:
        assert img.format == "PNG"


def test_reconstruct_refuses_a_used_folder_and_overwrite_replaces_only_its_results(tok_dir, tmp_path, capsys):
    out = tmp_path / "rec"
    argv = ["reconstruct", "--tokenizer", str(tok_dir), "--builtin", "2", "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--save-images"]) == 0
    before = (out / "metrics.json").read_bytes()
    assert len(list((out / "recon").iterdir())) == 2
    capsys.readouterr()
    assert main([*argv, "--builtin", "1"]) == 2
    _refused(capsys, out)
    assert (out / "metrics.json").read_bytes() == before and len(list((out / "recon").iterdir())) == 2
    (out / "notes.txt").write_text("mine")
    assert main([*argv, "--builtin", "1", "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["count"] == 1
    assert not (out / "recon").exists()  # the earlier run's reconstructions do not stay beside the new results
    assert (out / "notes.txt").read_text() == "mine"  # not one of reconstruct's files: kept
    (tmp_path / "file").write_text("x")
    assert main([*argv[:-4], "--out", str(tmp_path / "file"), "--overwrite"]) == 2
    assert "is a file" in _one_line(capsys)


def test_pretokenize_probe_and_evaluate_refuse_an_existing_output_before_any_work(tok_dir, tmp_path, capsys):
    data = make_image_folder(tmp_path / "d" / "train", per_class=2)
    make_image_folder(tmp_path / "d" / "val", per_class=1, seed=1)
    old = tmp_path / "old.out"
    old.write_bytes(b"earlier results")
    np.savez(tmp_path / "imgs.npz", arr_0=np.zeros((2, 16, 16, 3), np.uint8))
    classifier = Path(imf.__file__).parent / "assets" / "demo" / "classifier"
    evaluate = ["evaluate", str(tmp_path / "imgs.npz"), "--no-inception", "--classifier", str(classifier),
                "--device", "cpu"]
    for argv in (["pretokenize", "--tokenizer", str(tok_dir), "--data", str(data.parent), "--num-workers", "0",
                  "--device", "cpu", "--no-progress", "--out", str(old)],
                 ["probe", "--tokenizer", str(tok_dir), "--data", str(data.parent), "--epochs", "2", "--device", "cpu",
                  "--out", str(old)],
                 [*evaluate, "--out", str(old)],
                 [*evaluate, "--ref", str(tmp_path / "imgs.npz"), "--save-ref-stats", str(old)]):
        assert main(argv) == 2, argv
        _refused(capsys, old, b"earlier results")
        assert main([*argv, "--overwrite"]) == 0, argv
        assert old.read_bytes() != b"earlier results"
        old.write_bytes(b"earlier results")
        capsys.readouterr()
