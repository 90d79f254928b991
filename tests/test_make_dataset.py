"""``make_dataset`` and ``imagefolder make-dataset``: layout, counts, determinism, disjoint splits, no download,
refusing a non-empty folder."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagefolder.cli import main
from imagefolder.data import CLASS_NAMES, builtin_images
from imagefolder.data.folder import ImageFolderDataset
from imagefolder.data.make_dataset import DATASETS, STAGING, make_dataset
from imagefolder.data.photos import PHOTO_CLASSES, load_photo, photo_crops

SMALL = dict(size=16, train_per_class=3, val_per_class=2)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("shapes") / "ds"
    return out, make_dataset("shapes", out, seed=1, **SMALL)


def test_layout_counts_and_summary(shapes):
    out, summary = shapes
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "train", "val"]
    for split, per_class in (("train", 3), ("val", 2)):
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(CLASS_NAMES)
        for name in CLASS_NAMES:
            files = sorted((out / split / name).iterdir())
            assert len(files) == per_class and all(f.suffix == ".png" for f in files)
            with Image.open(files[0]) as img:
                assert img.size == (16, 16) and img.mode == "RGB"
    assert (out / "train" / "circle" / "00000.png").exists() and (out / "train" / "circle" / "00010.png").exists()
    assert summary["train"] == 30 and summary["val"] == 20 and summary["classes"] == sorted(CLASS_NAMES)
    on_disk = json.loads((out / "dataset.json").read_text())
    assert on_disk == {k: v for k, v in summary.items() if k not in ("out", "seconds")}
    ds = ImageFolderDataset(out / "train", 16)
    assert ds.classes == summary["classes"] and len(ds) == 30


def test_files_are_the_pictures_of_their_split_stream(shapes):
    out, _ = shapes
    train, labels = builtin_images(30, 16, seed=1)
    val, _ = builtin_images(20, 16, seed=1, stream=1)
    assert np.array_equal(np.asarray(Image.open(out / "train" / "star" / "00013.png")), train[13])
    assert CLASS_NAMES[labels[13]] == "star"
    assert np.array_equal(np.asarray(Image.open(out / "val" / "circle" / "00010.png")), val[10])


def test_same_seed_is_byte_identical_and_another_seed_differs(shapes, tmp_path):
    out, _ = shapes
    again = tmp_path / "again"
    make_dataset("shapes", again, seed=1, **SMALL)
    assert _files(again) == _files(out)
    assert (again / "dataset.json").read_bytes() == (out / "dataset.json").read_bytes()
    other = tmp_path / "other"
    make_dataset("shapes", other, seed=2, **SMALL)
    a, b = _files(out), _files(other)
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a)


def test_train_and_val_are_different_pictures(shapes):
    out, _ = shapes
    train = {np.asarray(Image.open(p)).tobytes() for p in (out / "train").rglob("*.png")}
    val = {np.asarray(Image.open(p)).tobytes() for p in (out / "val").rglob("*.png")}
    assert len(train) == 30 and len(val) == 20 and not train & val


def test_streams_and_offsets_of_the_shapes_set():
    whole, labels = builtin_images(12, 16, seed=3, stream=1)
    part, part_labels = builtin_images(5, 16, seed=3, first=7, stream=1)
    assert np.array_equal(part, whole[7:]) and np.array_equal(part_labels, labels[7:])
    other, _ = builtin_images(12, 16, seed=3, stream=0)
    assert (np.abs(other.astype(int) - whole).mean(axis=(1, 2, 3)) > 5).all()


def test_size_option(tmp_path):
    make_dataset("shapes", tmp_path / "d", size=24, train_per_class=1, val_per_class=1)
    for path in (tmp_path / "d").rglob("*.png"):
        assert Image.open(path).size == (24, 24)


def test_photos_load_offline_and_make_a_dataset(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    load_photo.cache_clear()
    assert len(PHOTO_CLASSES) >= 6 and DATASETS["photos"].classes == PHOTO_CLASSES
    for name in PHOTO_CLASSES:
        photo = load_photo(name)
        assert photo.mode == "RGB" and min(photo.size) >= 200
    summary = make_dataset("photos", tmp_path / "p", size=20, train_per_class=2, val_per_class=1, seed=4)
    assert summary["classes"] == sorted(PHOTO_CLASSES) and summary["train"] == 2 * len(PHOTO_CLASSES)
    crops, _ = photo_crops(len(PHOTO_CLASSES), 20, seed=4)
    for img in crops:
        assert img.shape == (20, 20, 3) and img.std() > 3  # a picture, not a flat patch
    on_disk = np.asarray(Image.open(tmp_path / "p" / "train" / PHOTO_CLASSES[1] / "00001.png"))
    assert np.array_equal(on_disk, crops[1])
    val, _ = photo_crops(len(PHOTO_CLASSES), 20, seed=4, stream=1)
    assert not any(np.array_equal(a, b) for a in crops for b in val)


def test_refuses_a_non_empty_folder_and_overwrite_replaces_only_the_splits(tmp_path, capsys):
    out = tmp_path / "d"
    make_dataset("shapes", out, size=8, train_per_class=2, val_per_class=1)
    (out / "notes.txt").write_text("keep me")
    before = _files(out)
    with pytest.raises(FileExistsError):
        make_dataset("shapes", out, size=8, train_per_class=1, val_per_class=1)
    rc = main(["make-dataset", "shapes", "--out", str(out), "--size", "8", "--train-per-class", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "not empty" in err and "--overwrite" in err
    assert _files(out) == before and (out / "notes.txt").read_text() == "keep me"
    rc = main(["make-dataset", "shapes", "--out", str(out), "--size", "8", "--train-per-class", "1",
               "--val-per-class", "1", "--overwrite"])
    assert rc == 0
    assert len(list((out / "train").rglob("*.png"))) == 10  # the previous, larger train split is gone
    assert (out / "notes.txt").read_text() == "keep me" and not (out / STAGING).exists()
    assert json.loads((out / "dataset.json").read_text())["train_per_class"] == 1


def test_a_killed_run_leaves_only_its_staging_folder(tmp_path):
    out = tmp_path / "d"
    (out / STAGING / "train" / "circle").mkdir(parents=True)  # what a killed first run leaves
    (out / STAGING / "train" / "circle" / "00000.png").write_bytes(b"half")
    make_dataset("shapes", out, size=8, train_per_class=1, val_per_class=1)  # not "non-empty": it is ours
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "train", "val"]


def test_cli_summary_help_and_option_errors(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["make-dataset", "photos", "--out", str(out), "--size", "12", "--train-per-class", "1",
                 "--val-per-class", "1", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert f"{len(PHOTO_CLASSES)} train + {len(PHOTO_CLASSES)} val images" in text and "12 px" in text
    assert main(["make-dataset", "shapes", "--out", str(tmp_path / "e"), "--size", "0"]) == 2
    assert "--size" in capsys.readouterr().err and not (tmp_path / "e").exists()
    with pytest.raises(SystemExit) as e:
        main(["make-dataset", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--size", "--train-per-class", "--val-per-class", "--seed", "--overwrite", "photos"):
        assert option in text
