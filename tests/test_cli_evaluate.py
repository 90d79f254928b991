"""``imagefolder evaluate`` end to end on CPU with random-weight extractors (no download): folders and npz files,
statistics files, reconstructions, the Inception path with a random-weight file, and one-line errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from imagefolder.cli import main
from imagefolder.data import builtin_images, write_builtin_images
from imagefolder.models.classifier import DomainClassifier, classifier_preset, save_classifier

SIZE, N = 16, 12


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A random-weight classifier, samples named like 'imagefolder sample' output (plus its grid.png), the same
    samples as an npz, and a reference set in the ImageFolder layout."""
    root = tmp_path_factory.mktemp("evaluate")
    ref = root / "ref"
    write_builtin_images(ref, N, size=SIZE, seed=4)
    classes = sorted(p.name for p in ref.iterdir())
    torch.manual_seed(0)
    save_classifier(DomainClassifier(classifier_preset("tiny", image_size=SIZE, num_classes=len(classes))).eval(),
                    classes, root / "clf")
    images, labels = builtin_images(N, size=SIZE, seed=3)
    samples = root / "samples"
    samples.mkdir()
    for i, (img, label) in enumerate(zip(images, labels)):
        Image.fromarray(img).save(samples / f"{i:06d}_class{label:04d}.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(samples / "grid.png")
    np.savez(root / "samples.npz", arr_0=images, labels=labels)
    return root


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["evaluate", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _evaluate(capsys, root: Path, *argv) -> dict:
    out = root / "metrics.json"  # shared by the tests: replaced each time
    rc, stdout, err = _run(capsys, *argv, "--out", out, "--overwrite", "--device", "cpu")
    assert rc == 0, err
    return json.loads(out.read_text())


def _assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 2 and err.count("\n") == 1 and err.startswith("imagefolder evaluate: error: "), err
    for fragment in fragments:
        assert fragment in err


def test_domain_metrics_on_folders(root, capsys):
    out = root / "folders.json"
    rc, stdout, _ = _run(capsys, root / "samples", "--ref", root / "ref", "--classifier", root / "clf",
                         "--no-inception", "--out", out, "--device", "cpu", "--batch-size", 5)
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "generation"
    assert report["samples"] == {"source": str(root / "samples"), "count": N, "labels_from": "file names",
                                 "ignored_files": 1}
    assert report["reference"] == {"source": str(root / "ref"), "kind": "images", "count": N}
    dom = report["domain"]
    assert dom["fid_features"] == f"domain:{root / 'clf'}" and len(dom["weights_sha256"]) == 64
    assert dom["fid"] > 0 and 0 <= dom["precision"] <= 1 and 0 <= dom["recall"] <= 1
    assert dom["is_mean"] >= 1 and 0 <= dom["class_accuracy"] <= 1 and dom["ref_stats"] == "computed"
    assert "inception" not in report
    for row in ("FID", "precision", "recall", "IS", "class accuracy", f"domain:{root / 'clf'}"):
        assert row in stdout


def test_npz_samples_give_the_folder_numbers(root, capsys):
    args = ("--ref", root / "ref", "--classifier", root / "clf", "--no-inception")
    folder = _evaluate(capsys, root, root / "samples", *args)["domain"]
    npz = _evaluate(capsys, root, root / "samples.npz", *args, "--batch-size", 5)
    assert npz["samples"]["count"] == N and npz["samples"]["labels_from"] == "npz labels"
    for key in ("fid", "precision", "recall", "is_mean", "class_accuracy"):
        assert npz["domain"][key] == pytest.approx(folder[key], rel=1e-5, abs=1e-9), key


def test_a_set_against_itself_and_cached_reference_statistics(root, capsys):
    stats = root / "ref_stats.npz"
    same = _evaluate(capsys, root, root / "ref", "--ref", root / "ref", "--classifier", root / "clf",
                     "--no-inception", "--save-ref-stats", stats)
    dom = same["domain"]
    assert abs(dom["fid"]) < 1e-4 and dom["precision"] == 1 and dom["recall"] == 1
    assert same["samples"]["labels_from"] == "class folders" and "class_accuracy" in dom
    assert same["saved_ref_stats"] == str(stats) and stats.is_file()
    fresh = _evaluate(capsys, root, root / "samples", "--ref", root / "ref", "--classifier", root / "clf",
                      "--no-inception")
    cached = _evaluate(capsys, root, root / "samples", "--ref", stats, "--classifier", root / "clf",
                       "--no-inception")
    assert cached["reference"] == {"source": str(stats), "kind": "statistics", "count": N}
    assert cached["domain"]["fid"] == pytest.approx(fresh["domain"]["fid"], rel=1e-9)
    assert cached["domain"]["ref_stats"] == "precomputed" and "precision" not in cached["domain"]
    assert any("precision/recall skipped" in n for n in cached["notes"])


def test_adm_reference_batch(root, capsys):
    images = np.stack([np.asarray(Image.open(p)) for p in sorted((root / "ref").rglob("*.png"))])
    adm = root / "VIRTUAL_ref.npz"
    np.savez(adm, arr_0=images, mu=np.zeros(4), sigma=np.eye(4))  # Inception stats unused with --no-inception
    report = _evaluate(capsys, root, root / "samples", "--ref", adm, "--classifier", root / "clf", "--no-inception")
    assert report["reference"]["kind"] == "images + statistics (ADM reference batch)"
    assert report["reference"]["count"] == N and report["domain"]["ref_stats"] == "computed"
    assert "precision" in report["domain"]


def test_reconstructions(root, capsys, tmp_path):
    recon = tmp_path / "recon"
    shutil.copytree(root / "ref", recon)
    same = _evaluate(capsys, root, recon, "--recon-of", root / "ref", "--classifier", root / "clf", "--no-inception")
    rec = same["reconstruction"]
    assert same["mode"] == "reconstruction" and rec["pairs"] == N and rec["paired_by"] == "file names"
    assert rec["psnr"] is None and rec["identical_pairs"] == N and rec["ssim"] == pytest.approx(1.0)
    assert abs(same["domain"]["fid"]) < 1e-4
    first = sorted(recon.rglob("*.png"))[0]
    arr = np.asarray(Image.open(first)).copy()
    arr[:4] = 255 - arr[:4]
    first.unlink()
    Image.fromarray(arr).save(first.with_suffix(".bmp"))  # another format: pairs by name without the suffix
    changed = _evaluate(capsys, root, recon, "--recon-of", root / "ref", "--no-inception")
    assert changed["reconstruction"]["identical_pairs"] == N - 1 and changed["reconstruction"]["ssim"] < 1
    assert "domain" not in changed
    npz = tmp_path / "recon.npz"
    np.savez(npz, arr_0=np.stack([np.asarray(Image.open(p)) for p in sorted((root / "ref").rglob("*.png"))]))
    by_index = _evaluate(capsys, root, npz, "--recon-of", root / "ref", "--no-inception")
    assert by_index["reconstruction"]["paired_by"] == "index" and by_index["reconstruction"]["identical_pairs"] == N


def _random_inception_weights(path: Path) -> None:
    """A state dict with the layout of torch-fidelity's Inception, randomly initialised (no download)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe
    torch.manual_seed(0)
    net = nn.Module()
    blocks = [("Conv2d_1a_3x3", fe.BasicConv2d(3, 32, kernel_size=3, stride=2)),
              ("Conv2d_2a_3x3", fe.BasicConv2d(32, 32, kernel_size=3)),
              ("Conv2d_2b_3x3", fe.BasicConv2d(32, 64, kernel_size=3, padding=1)),
              ("Conv2d_3b_1x1", fe.BasicConv2d(64, 80, kernel_size=1)),
              ("Conv2d_4a_3x3", fe.BasicConv2d(80, 192, kernel_size=3)),
              ("Mixed_5b", fe.InceptionA(192, pool_features=32)), ("Mixed_5c", fe.InceptionA(256, pool_features=64)),
              ("Mixed_5d", fe.InceptionA(288, pool_features=64)), ("Mixed_6a", fe.InceptionB(288)),
              ("Mixed_6b", fe.InceptionC(768, channels_7x7=128)), ("Mixed_6c", fe.InceptionC(768, channels_7x7=160)),
              ("Mixed_6d", fe.InceptionC(768, channels_7x7=160)), ("Mixed_6e", fe.InceptionC(768, channels_7x7=192)),
              ("Mixed_7a", fe.InceptionD(768)), ("Mixed_7b", fe.InceptionE_1(1280)),
              ("Mixed_7c", fe.InceptionE_2(2048)), ("fc", nn.Linear(2048, 1008))]
    for name, block in blocks:
        net.add_module(name, block)
    torch.save(net.state_dict(), path)


def test_inception_path_with_random_weights(root, capsys, tmp_path):
    # no --ref: a 2048-d FID needs a 2048 x 2048 matrix square root, tens of seconds on a busy 2-core CPU
    weights = tmp_path / "inception.pth"
    _random_inception_weights(weights)
    small = tmp_path / "four.npz"
    np.savez(small, arr_0=builtin_images(4, size=SIZE, seed=5)[0])
    report = _evaluate(capsys, root, small, "--inception-weights", weights)
    inc = report["inception"]
    assert inc["fid_features"] == "inception-v3-compat" and inc["weights"] == str(weights)
    assert inc["is_mean"] >= 1 - 1e-9 and "fid" not in inc and "weights_sha256" not in inc


def test_unusable_inception_weights(root, capsys, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not weights")
    report = _evaluate(capsys, root, root / "samples", "--classifier", root / "clf", "--inception-weights", junk)
    assert "inception" not in report and "is_mean" in report["domain"]
    assert any("Inception metrics skipped" in n and "junk.pth" in n for n in report["notes"])
    rc, _, err = _run(capsys, root / "samples", "--inception-weights", junk)
    _assert_one_line_error(rc, err, "--inception-weights", "junk.pth")
    rc, _, err = _run(capsys, root / "samples", "--inception-weights", tmp_path / "absent.pth")
    _assert_one_line_error(rc, err, "--inception-weights", "absent.pth", "no such file")


def test_errors_are_one_line(root, capsys, tmp_path):
    dom = ("--classifier", root / "clf", "--no-inception")
    rc, _, err = _run(capsys, tmp_path / "missing", *dom)
    _assert_one_line_error(rc, err, "missing")
    bad = tmp_path / "bad"
    shutil.copytree(root / "samples", bad)
    (bad / "000003_class0003.png").write_bytes(b"\x89PNG broken")
    rc, _, err = _run(capsys, bad, *dom)
    _assert_one_line_error(rc, err, "000003_class0003.png", "cannot read image")
    np.savez(tmp_path / "labels_only.npz", labels=np.zeros(3, np.int64))
    rc, _, err = _run(capsys, tmp_path / "labels_only.npz", *dom)
    _assert_one_line_error(rc, err, "labels_only.npz", "no arr_0")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    rc, _, err = _run(capsys, root / "samples", "--ref", tmp_path / "junk.npz", *dom)
    _assert_one_line_error(rc, err, "junk.npz", "not an .npz")
    rc, _, err = _run(capsys, root / "samples", "--ref", root / "ref", "--recon-of", root / "ref", *dom)
    _assert_one_line_error(rc, err, "--recon-of")
    rc, _, err = _run(capsys, root / "samples", "--no-inception")
    _assert_one_line_error(rc, err, "nothing to evaluate")
    rc, _, err = _run(capsys, root / "samples", "--classifier", tmp_path / "no_clf", "--no-inception")
    _assert_one_line_error(rc, err, "no_clf")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(mixed / "b.png")
    rc, _, err = _run(capsys, mixed, *dom)
    _assert_one_line_error(rc, err, "b.png", "--image-size")
