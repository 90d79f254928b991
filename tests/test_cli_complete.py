"""``imagefolder complete``: kept scales, the figure's layout, option and input errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import imagefolder as imf
from imagefolder.cli import main
from imagefolder.viz import PADDING


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_generator):
    root = tmp_path_factory.mktemp("complete")
    gen_dir = imf.save_generator(tiny_generator, root / "gen")  # the reference's perturbed weights: codes matter
    pics = root / "pics"
    pics.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (80, 72, 3), dtype=np.uint8)).save(pics / f"{i}.png")
    return gen_dir, pics


def _cells(png, rows: int, cols: int, size: int = 64) -> np.ndarray:
    """The figure's cells (rows, cols, size, size, 3), below the column labels."""
    img = np.asarray(Image.open(png).convert("RGB"))
    grid_h = rows * (size + PADDING) + PADDING
    assert img.shape[1] == cols * (size + PADDING) + PADDING
    top = img.shape[0] - grid_h
    assert top > 0  # the column labels
    return np.stack([np.stack([img[top + PADDING + r * (size + PADDING):][:size, PADDING + c * (size + PADDING):][:, :size]
                               for c in range(cols)]) for r in range(rows)])


def test_all_scales_kept_reproduces_the_reconstruction_and_fewer_do_not(setup, tmp_path, capsys):
    gen_dir, pics = setup
    args = ["complete", str(pics), "--generator", str(gen_dir), "--classes", "2", "--num", "2", "--top-k", "16",
            "--no-progress"]
    assert main([*args, "--keep-scales", "4", "--out", str(tmp_path / "all.png")]) == 0
    assert "3 pictures completed 2 times each from their first 4 of 4 scales" in capsys.readouterr().out
    cells = _cells(tmp_path / "all.png", rows=3, cols=4)
    for j in (2, 3):
        assert np.array_equal(cells[:, j], cells[:, 1])  # every scale kept: the completion is the reconstruction
    assert main([*args, "--keep-scales", "1", "--out", str(tmp_path / "one.png")]) == 0
    cells1 = _cells(tmp_path / "one.png", rows=3, cols=4)
    assert np.array_equal(cells1[:, :2], cells[:, :2])  # the same pictures and reconstructions
    assert not np.array_equal(cells1[:, 2], cells1[:, 1]) and not np.array_equal(cells1[:, 2], cells1[:, 3])
    # the default keeps half of the scales; the streams follow the seed
    assert main([*args, "--out", str(tmp_path / "half.png")]) == 0
    assert "from their first 2 of 4 scales" in capsys.readouterr().out


@pytest.mark.parametrize("extra, words", [
    (["--classes", "1,2"], "2 classes for 3 pictures"),
    (["--classes", "1", "--keep-scales", "5"], "--keep-scales must be in 0..4"),
    (["--classes", "99"], "outside"),
    (["--classes", "1", "--num", "0"], "at least 1"),
    (["--classes", "1", "--temperature", "0"], "--temperature must be a finite number > 0"),
])
def test_option_errors_are_one_line(setup, tmp_path, capsys, extra, words):
    gen_dir, pics = setup
    rc = main(["complete", str(pics), "--generator", str(gen_dir), "--out", str(tmp_path / "x.png"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and words in err
    assert not (tmp_path / "x.png").exists()


def test_bad_pictures_are_one_line_errors(setup, tmp_path, capsys):
    gen_dir, _ = setup
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    for target, words in ((bad, "cannot read image"), (tmp_path / "missing.png", "no such file")):
        rc = main(["complete", str(target), "--generator", str(gen_dir), "--classes", "1",
                   "--out", str(tmp_path / "x.png")])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and words in err


def test_mask_keeps_the_white_region(setup, tmp_path, capsys):
    gen_dir, pics = setup
    args = ["complete", str(pics), "--generator", str(gen_dir), "--classes", "2", "--num", "2", "--top-k", "16",
            "--no-progress"]
    for name, value in (("white", 255), ("black", 0)):
        Image.new("L", (72, 80), value).save(tmp_path / f"{name}.png")
        assert main([*args, "--mask", str(tmp_path / f"{name}.png"), "--out", str(tmp_path / f"{name}-out.png")]) == 0
    assert "from their first 0 of 4 scales and the region of" in capsys.readouterr().out
    white = _cells(tmp_path / "white-out.png", rows=3, cols=4)
    for j in (2, 3):
        assert np.array_equal(white[:, j], white[:, 1])  # all kept: the reconstruction
    assert main([*args, "--keep-scales", "0", "--out", str(tmp_path / "free.png")]) == 0
    black = _cells(tmp_path / "black-out.png", rows=3, cols=4)
    assert np.array_equal(black, _cells(tmp_path / "free.png", rows=3, cols=4))  # nothing kept: plain samples
    assert not np.array_equal(black[:, 2], white[:, 2])


def test_bad_masks_are_one_line_errors(setup, tmp_path, capsys):
    gen_dir, pics = setup
    Image.new("L", (64, 64), 255).save(tmp_path / "small.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    for mask, words in (("small.png", "is 64x64 but picture"), ("junk.png", "cannot read image"),
                        ("missing.png", "no such file")):
        rc = main(["complete", str(pics), "--generator", str(gen_dir), "--classes", "1", "--mask",
                   str(tmp_path / mask), "--out", str(tmp_path / "x.png")])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and words in err
    assert not (tmp_path / "x.png").exists()
