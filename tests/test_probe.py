"""Linear probing of tokenizer features: the classifier on synthetic features, features of a tiny tokenizer, the CLI.

The tokenizer is the official tiny test vector (tests/data/tiny_tokenizer.pt, 64 px, random weights): the "tiny"
preset's random init has DINOv2 LayerScale factors of 1e-5, so its latents hardly depend on the image and every
probe on it would be at chance.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from imagefolder.cli import main
from imagefolder.config import tokenizer_preset
from imagefolder.data.folder import ImageFolderDataset, collate_skip_bad
from imagefolder.data.make_dataset import make_dataset
from imagefolder.metrics.probe import Features, extract_features, probe_features, probe_tokenizer, semantic_branch

DATA = Path(__file__).parent / "data"
COLOURS = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]])


def _coloured(labels_N: torch.Tensor, seed: int) -> torch.Tensor:
    """Noisy images (N, 3, 64, 64) whose mean colour is their label's."""
    noise = torch.randn(len(labels_N), 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    return (0.7 * COLOURS[labels_N][:, :, None, None] + 0.3 * noise).clamp(-1, 1)


def test_probe_finds_the_branch_that_carries_the_label():
    g = torch.Generator().manual_seed(0)
    centres_MF = 3 * torch.randn(4, 6, generator=g)

    def features(n: int) -> Features:
        y = torch.randint(0, 4, (n,), generator=g)
        detail = torch.randn(n, 6, generator=g)                                  # independent of the label
        semantic = centres_MF[y] + torch.randn(n, 6, generator=g)               # label + noise: separable
        return Features([detail, 100 * semantic + 7], y)                        # scale and offset: standardised away

    res = probe_features(features(400), features(200), 4)
    assert res["branch1"] >= 0.95 and res["train_accuracy"]["branch1"] >= 0.95
    assert res["branch0"] <= 0.4                                                 # chance is 0.25


def test_tokenizer_features_follow_the_images_not_random_labels(tiny_tokenizer):
    y_train, y_val = torch.arange(120) % 4, torch.arange(60) % 4
    train = extract_features(tiny_tokenizer, (_coloured(y_train, 1), y_train), batch_size=60)
    val = extract_features(tiny_tokenizer, (_coloured(y_val, 2), y_val), batch_size=60)
    res = probe_features(train, val, 4)
    assert res["branch0"] >= 0.9 and res["branch1"] >= 0.9
    g = torch.Generator().manual_seed(3)
    shuffled = probe_features(Features(train.per_branch, torch.randint(0, 4, (120,), generator=g)),
                              Features(val.per_branch, torch.randint(0, 4, (60,), generator=g)), 4)
    assert shuffled["branch0"] <= 0.45 and shuffled["branch1"] <= 0.45  # chance is 0.25


def test_probe_tokenizer_reports_branches_sizes_and_the_semantic_branch(tiny_tokenizer):
    y = torch.arange(8) % 4
    res = probe_tokenizer(tiny_tokenizer, (_coloured(y, 1), y), (_coloured(y[:4], 2), y[:4]), max_iter=10)
    assert set(res) >= {"branch0", "branch1", "train_accuracy", "semantic", "num_classes", "skipped"}
    assert res["semantic"] == "branch1" and res["num_classes"] == 4
    assert res["num_train"] == 8 and res["num_val"] == 4 and res["feature_dims"] == {"branch0": 8, "branch1": 8}


def test_flatten_pool_batches_and_mode(tiny_tokenizer):
    x = _coloured(torch.arange(6) % 4, 0)
    tiny_tokenizer.train()
    try:
        flat = extract_features(tiny_tokenizer, (x, torch.arange(6)), pool="flatten", batch_size=4)
        assert tiny_tokenizer.training  # the caller's mode comes back
    finally:
        tiny_tokenizer.eval()
    c = tiny_tokenizer.config
    assert flat.per_branch[0].shape == (6, c.codebook_embed_dim * c.num_latent_tokens)
    mean = extract_features(tiny_tokenizer, [(x[:4], torch.arange(4)), (x[4:], torch.arange(4, 6))])
    _, fhats = tiny_tokenizer.encode_with_fhats(x)
    for p in range(2):
        torch.testing.assert_close(mean.per_branch[p], fhats[p][-1].mean(dim=(2, 3)))
        torch.testing.assert_close(flat.per_branch[p], fhats[p][-1].flatten(1))
    with pytest.raises(ValueError, match="pool"):
        extract_features(tiny_tokenizer, (x, torch.arange(6)), pool="max")


def test_semantic_branch_naming():
    named = lambda **kw: semantic_branch(SimpleNamespace(config=tokenizer_preset("tiny", **kw)))  # noqa: E731
    assert named() == "branch1" and named(product_quant=3) == "branch2"
    assert named(half_sem=False) == "all" and named(semantic_guide="none") is None


def test_unreadable_files_are_skipped_and_listed(tiny_tokenizer, tmp_path):
    make_dataset("shapes", tmp_path / "d", size=16, train_per_class=1, val_per_class=1)
    bad = tmp_path / "d" / "train" / "star" / "broken.png"
    bad.write_bytes(b"not a png")
    loader = DataLoader(ImageFolderDataset(tmp_path / "d" / "train", 64), batch_size=4, collate_fn=collate_skip_bad)
    feats = extract_features(tiny_tokenizer, loader)
    assert len(feats.labels) == 10 and len(feats.skipped) == 1 and str(bad) in feats.skipped[0]


def test_cli_end_to_end_writes_json(tmp_path, capsys):
    data = tmp_path / "d"
    make_dataset("shapes", data, size=16, train_per_class=3, val_per_class=1)
    out = tmp_path / "probe.json"
    rc = main(["probe", "--tokenizer", str(DATA / "tiny_tokenizer.pt"), "--data", str(data), "--epochs", "20",
               "--batch-size", "16", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "branch1 (semantic): top-1" in text and "chance 10.0%" in text
    res = json.loads(out.read_text())
    assert res["num_train"] == 30 and res["num_val"] == 10 and res["semantic"] == "branch1"
    assert res["classes"] == sorted(p.name for p in (data / "train").iterdir()) and res["pool"] == "mean"
    assert all(0 <= res[f"branch{p}"] <= 1 for p in range(2)) and res["skipped"] == []


def test_cli_errors_are_one_line(tmp_path, capsys):
    data = tmp_path / "d"
    make_dataset("shapes", data, size=8, train_per_class=1, val_per_class=1)
    tok = str(DATA / "tiny_tokenizer.pt")
    assert main(["probe", "--tokenizer", tok, "--data", str(data), "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["probe", "--tokenizer", tok, "--data", str(data / "train"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'val'" in err
    (data / "val" / "dragon").mkdir()
    Image.new("RGB", (8, 8)).save(data / "val" / "dragon" / "0.png")
    assert main(["probe", "--tokenizer", tok, "--data", str(data), "--device", "cpu"]) == 2
    assert "dragon" in capsys.readouterr().err
