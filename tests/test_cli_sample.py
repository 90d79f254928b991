"""``imagefolder sample``: files, npz, resuming, batch-size and process-count independence, option errors."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import imagefolder as imf
from imagefolder.cli import main


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory):
    torch.manual_seed(0)
    return imf.save_generator(imf.load_generator("tiny"), tmp_path_factory.mktemp("gen") / "tiny")


def _sample(gen_dir, out, *extra):
    return main(["sample", "--generator", str(gen_dir), "--classes", "1,3-4", "--per-class", "2", "--top-k", "16",
                 "--out", str(out), *extra])


def _pngs(out):
    return sorted(p.name for p in out.glob("*_class*.png"))


def test_files_npz_and_grid(gen_dir, tmp_path):
    out = tmp_path / "s"
    assert _sample(gen_dir, out, "--npz") == 0
    names = _pngs(out)
    assert names == [f"{i:06d}_class{c:04d}.png" for i, c in enumerate([1, 1, 3, 3, 4, 4])]
    data = np.load(out / "samples.npz")
    assert data["arr_0"].shape == (6, 64, 64, 3) and data["arr_0"].dtype == np.uint8
    assert data["labels"].tolist() == [1, 1, 3, 3, 4, 4]
    for k, name in enumerate(names):
        assert np.array_equal(data["arr_0"][k], np.asarray(Image.open(out / name)))
    assert Image.open(out / "grid.png").size[0] > 64


def test_resume_regenerates_only_missing_images_identically(gen_dir, tmp_path, capsys):
    out = tmp_path / "s"
    assert _sample(gen_dir, out) == 0
    before = (out / "000003_class0003.png").read_bytes()
    (out / "000003_class0003.png").unlink()
    capsys.readouterr()
    assert _sample(gen_dir, out) == 0
    assert "generated 1 in" in capsys.readouterr().out
    assert (out / "000003_class0003.png").read_bytes() == before


def test_batch_size_does_not_change_images(gen_dir, tmp_path):
    assert _sample(gen_dir, tmp_path / "b1", "--batch-size", "1") == 0
    assert _sample(gen_dir, tmp_path / "b4", "--batch-size", "4") == 0
    for name in _pngs(tmp_path / "b1"):
        a = np.asarray(Image.open(tmp_path / "b1" / name))
        b = np.asarray(Image.open(tmp_path / "b4" / name))
        assert np.array_equal(a, b), name


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun not installed")
def test_two_processes_give_the_same_images_as_one(gen_dir, tmp_path):
    assert _sample(gen_dir, tmp_path / "one") == 0
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun if os.path.exists(torchrun) else "torchrun", "--nproc_per_node=2", "--standalone",
           "-m", "imagefolder.cli", "sample", "--generator", str(gen_dir), "--classes", "1,3-4", "--per-class", "2",
           "--top-k", "16", "--out", str(tmp_path / "two"), "--npz", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _pngs(tmp_path / "two") == _pngs(tmp_path / "one")
    for name in _pngs(tmp_path / "one"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert np.load(tmp_path / "two" / "samples.npz")["arr_0"].shape == (6, 64, 64, 3)


@pytest.mark.parametrize("args, message", [
    (["--classes", "1,x"], "cannot read"),
    (["--classes", "12"], "outside 0..9"),
    (["--classes", "5-2"], "cannot read"),
    (["--classes", "1", "--per-class", "0"], "--per-class"),
    (["--classes", "1", "--top-p", "1.5"], "--top-p"),
])
def test_bad_options_are_one_line_errors(gen_dir, tmp_path, capsys, args, message):
    code = main(["sample", "--generator", str(gen_dir), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("args", [[], ["--classes", "1", "--all-classes"]])
def test_exactly_one_class_option(gen_dir, tmp_path, capsys, args):
    code = main(["sample", "--generator", str(gen_dir), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and "exactly one of --classes LIST and --all-classes" in err and err.count("\n") == 1


def test_preset_all_classes_and_grid_columns(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["sample", "--generator", "tiny", "--all-classes", "--top-k", "16", "--grid-cols", "5",
                 "--out", str(out)]) == 0
    assert _pngs(out) == [f"{c:06d}_class{c:04d}.png" for c in range(10)]
    assert Image.open(out / "grid.png").size == (2 + 5 * 66, 2 + 2 * 66)  # 5 columns, 2 rows, 2 px padding
    assert "10 samples in" in capsys.readouterr().out


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = capsys.readouterr().out
    assert "(default: 3.25)" in text and "(default: 750)" in text and "samples.npz" in text
    assert "random stream (default: 0)" in text and "(default: None)" not in text and "(default: False)" not in text
