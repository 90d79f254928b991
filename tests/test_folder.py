"""ImageFolder-layout datasets: classes, labels, deterministic flips, unreadable files skipped and reported."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from imagefolder.data import ImageError, ImageFolderDataset, collate_skip_bad, split_dir
from imagefolder.data.folder import flip_decision


def _write(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def tree(tmp_path):
    for c, name in enumerate(["cat", "ant", "bee"]):
        for i in range(3):
            _write(tmp_path / "train" / name / f"{i}.png", 10 * c + i)
    return tmp_path


def test_classes_sorted_and_labels(tree):
    ds = ImageFolderDataset(split_dir(tree, "train"), 16)
    assert ds.classes == ["ant", "bee", "cat"]
    assert len(ds) == 9 and sorted(set(ds.labels)) == [0, 1, 2]
    x, y, i = ds[0]
    assert x.shape == (3, 16, 16) and -1 <= x.min() and x.max() <= 1 and y == 0 and i == 0


def test_corrupt_file_is_skipped_and_named(tree):
    bad = tree / "train" / "ant" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = ImageFolderDataset(tree / "train", 16)
    batches = list(DataLoader(ds, batch_size=4, collate_fn=collate_skip_bad))
    assert sum(b.images.shape[0] for b in batches) == 9
    reported = [it.path for b in batches for it in b.bad]
    assert reported == [str(bad)]


def test_flips_depend_only_on_seed_epoch_index(tree):
    a = ImageFolderDataset(tree / "train", 16, flip=True, seed=3)
    plain = ImageFolderDataset(tree / "train", 16)
    for epoch in (0, 1):
        a.set_epoch(epoch)
        for i in range(len(a)):
            want = plain[i][0].flip(-1) if flip_decision(3, epoch, i) else plain[i][0]
            assert torch.equal(a[i][0], want)
    assert len({flip_decision(0, e, i) for e in range(4) for i in range(8)}) == 2


def test_empty_and_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        ImageFolderDataset(tmp_path / "nope", 16)
    with pytest.raises(ImageError, match="no class folders"):
        ImageFolderDataset(tmp_path, 16)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("x")
    with pytest.raises(ImageError, match="no images"):
        ImageFolderDataset(tmp_path, 16)
    with pytest.raises(FileNotFoundError, match="val"):
        split_dir(tmp_path, "val")
