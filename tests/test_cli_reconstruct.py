"""``imagefolder reconstruct`` end to end on CPU with tiny tokenizers: outputs, consistency, one-line errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import imagefolder as imf
from imagefolder.cli import main
from imagefolder.data import builtin_names, load_image
from imagefolder.metrics import psnr, ssim

DATA = Path(__file__).parent / "data"


@pytest.fixture
def folder(tmp_path) -> Path:
    """Four pictures of different sizes and formats, one in a subfolder."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    sizes = {"b.png": (80, 120), "a.jpg": (64, 64), "sub/c.png": (300, 200), "sub/d.webp": (50, 90)}
    for name, (h, w) in sizes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name)
    return root


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["reconstruct", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("imagefolder reconstruct: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_folder_outputs_are_complete_and_consistent(folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, _ = _run(capsys, "--tokenizer", "tiny", "--images", folder, "--out", out, "--batch-size", 3,
                         "--save-images", "--progression", 2)
    assert rc == 0 and "reconstructed 4 images" in stdout
    meta = json.loads((out / "metrics.json").read_text())
    names = ["a.jpg", "b.png", "sub/c.png", "sub/d.webp"]
    assert meta["count"] == 4 and [r["name"] for r in meta["images"]] == names
    assert meta["image_size"] == 64 and meta["v_patch_nums"] == [1, 2, 3, 4]
    assert meta["mean_psnr"] == pytest.approx(np.mean([r["psnr"] for r in meta["images"]]), abs=1e-5)
    assert meta["mean_ssim"] == pytest.approx(np.mean([r["ssim"] for r in meta["images"]]), abs=1e-5)
    rows = list(csv.reader((out / "metrics.csv").open()))
    assert rows[0] == ["name", "psnr", "ssim"] and [r[0] for r in rows[1:]] == names + ["mean"]
    assert float(rows[-1][1]) == pytest.approx(meta["mean_psnr"], abs=1e-3)
    # the metrics are those of the saved 8-bit reconstructions against the cropped inputs
    recon = [out / "recon" / n for n in ["a.png", "b.png", "sub/c.png", "sub/d.png"]]
    y = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p in recon]).double() / 255
    x = torch.stack([load_image(folder / n, 64) for n in names]).double().add(1).div(2)
    np.testing.assert_allclose(psnr(x, y).numpy(), [r["psnr"] for r in meta["images"]], atol=1e-5)
    np.testing.assert_allclose(ssim(x, y).numpy(), [r["ssim"] for r in meta["images"]], atol=1e-5)
    # grid: originals over reconstructions, 4 columns; progression: 2 rows of input + 4 scales, under a label strip
    assert Image.open(out / "grid.png").size == (4 * 66 + 2, 2 * 66 + 2)
    width, height = Image.open(out / "progression.png").size
    assert width == 5 * 66 + 2 and height > 2 * 66 + 2
    assert not list(out.glob(".*.tmp"))


def test_builtin_set_is_the_default(tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, _ = _run(capsys, "--tokenizer", "tiny", "--out", out)
    assert rc == 0
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["count"] == 16 and [r["name"] for r in meta["images"]] == builtin_names(16)
    assert meta["source"] == "builtin (n=16, seed=0)"
    assert {p.name for p in out.iterdir()} == {"grid.png", "progression.png", "metrics.csv", "metrics.json"}


def test_official_checkpoint_metrics_match_the_python_api(tmp_path, capsys):
    out = tmp_path / "out"
    ckpt = DATA / "tiny_tokenizer.pt"
    rc, _, _ = _run(capsys, "--tokenizer", ckpt, "--builtin", 5, "--limit", 3, "--out", out, "--grid", 0,
                    "--progression", 0)
    assert rc == 0
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["count"] == 3 and not (out / "grid.png").exists() and not (out / "progression.png").exists()
    from imagefolder.data import builtin_images, to_tensor
    x = torch.stack([to_tensor(img) for img in builtin_images(3, 64)[0]])
    y = imf.load_tokenizer(ckpt).reconstruct(x)
    unit = lambda t: t.add(1).div(2).clamp(0, 1).mul(255).round().div(255)  # noqa: E731
    np.testing.assert_allclose([r["psnr"] for r in meta["images"]], psnr(unit(x), unit(y)).numpy(), atol=1e-5)


def test_bfloat16_runs_and_stays_close_to_float32(tmp_path, capsys):
    results = {}
    for dtype in ("float32", "bfloat16"):
        rc, _, _ = _run(capsys, "--tokenizer", DATA / "tiny_tokenizer.pt", "--builtin", 4, "--out",
                        tmp_path / dtype, "--dtype", dtype, "--progression", 1)
        assert rc == 0
        results[dtype] = json.loads((tmp_path / dtype / "metrics.json").read_text())
    assert results["bfloat16"]["dtype"] == "bfloat16"
    assert results["bfloat16"]["mean_psnr"] == pytest.approx(results["float32"]["mean_psnr"], abs=0.5)


def test_corrupt_image_is_one_line_and_leaves_no_summary(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(capsys, "--tokenizer", "tiny", "--images", folder, "--out", out)[0] == 0
    assert (out / "metrics.json").exists()
    bad = folder / "sub" / "zz_broken.png"
    bad.write_bytes(b"not an image at all")
    rc, _, err = _run(capsys, "--tokenizer", "tiny", "--images", folder, "--out", out, "--batch-size", 2, "--overwrite")
    _assert_one_line_error(rc, err, str(bad), "cannot read image")
    assert not (out / "metrics.json").exists() and not (out / "grid.png").exists()  # no stale summary left behind


def test_empty_folder_missing_folder_and_bad_checkpoints(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = _run(capsys, "--tokenizer", "tiny", "--images", empty, "--out", tmp_path / "o")
    _assert_one_line_error(rc, err, "no images found", str(empty))
    rc, _, err = _run(capsys, "--tokenizer", "tiny", "--images", tmp_path / "nowhere", "--out", tmp_path / "o")
    _assert_one_line_error(rc, err, "no such folder")
    rc, _, err = _run(capsys, "--tokenizer", tmp_path / "missing.pt", "--out", tmp_path / "o")
    _assert_one_line_error(rc, err, "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 100)
    rc, _, err = _run(capsys, "--tokenizer", garbage, "--out", tmp_path / "o")
    _assert_one_line_error(rc, err, "garbage.pt")
    rc, _, err = _run(capsys, "--tokenizer", "tiny", "--out", tmp_path / "o", "--batch-size", 0)
    _assert_one_line_error(rc, err, "--batch-size")
    assert not (tmp_path / "o").exists()


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["reconstruct", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--tokenizer", "--images", "--builtin", "--out", "--batch-size", "--limit", "--progression",
                   "--save-images", "--dtype", "--device", "(default: 8)"):
        assert option in text
