"""The domain classifier: shapes, configuration checks, checkpoint round trip, and ``imagefolder train-classifier``
end to end on a tiny generated dataset."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from imagefolder.checkpoint import save_model
from imagefolder.cli import main
from imagefolder.config import ConfigError, tokenizer_preset
from imagefolder.data import write_builtin_images
from imagefolder.models.classifier import (ClassifierConfig, DomainClassifier, classifier_preset, load_classifier,
                                           save_classifier)
from imagefolder.official import CheckpointError


@pytest.mark.parametrize("preset, size, dim", [("tiny", 32, 128), ("small", 64, 256)])
def test_shapes(preset, size, dim):
    model = DomainClassifier(classifier_preset(preset, image_size=size, num_classes=7)).eval()
    x = torch.rand(3, 3, size, size) * 2 - 1
    feat = model.features(x)
    assert feat.shape == (3, dim) == (3, model.config.feature_dim)
    logits = model(x)
    assert logits.shape == (3, 7)
    torch.testing.assert_close(logits, model.head(feat))


def test_invalid_configurations():
    with pytest.raises(ConfigError, match="num_classes"):
        ClassifierConfig(num_classes=1)
    with pytest.raises(ConfigError, match="too small"):
        ClassifierConfig(image_size=8, depth=4)
    with pytest.raises(ConfigError, match="unknown classifier preset"):
        classifier_preset("huge")
    with pytest.raises(ConfigError, match="unknown ClassifierConfig field"):
        ClassifierConfig.from_dict({"image_size": 32, "colour": 1})


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = DomainClassifier(classifier_preset("tiny", num_classes=3))
    model(torch.randn(4, 3, 32, 32))  # move the BatchNorm running statistics away from their initial values
    model.eval()
    save_classifier(model, ["cat", "dog", "fox"], tmp_path / "clf", info={"val_accuracy": 0.5})
    loaded, names = load_classifier(tmp_path / "clf")
    assert names == ["cat", "dog", "fox"] and loaded.config == model.config and not loaded.training
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    meta = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert meta["kind"] == "classifier" and meta["info"] == {"val_accuracy": 0.5}
    with pytest.raises(ValueError, match="2 class names"):
        save_classifier(model, ["cat", "dog"], tmp_path / "bad")


def test_loading_something_else_fails_clearly(tmp_path):
    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))
    save_model(Holder(), "tokenizer", tokenizer_preset("tiny"), tmp_path / "tok")
    with pytest.raises(CheckpointError, match="not a classifier"):
        load_classifier(tmp_path / "tok")
    small = DomainClassifier(classifier_preset("tiny", num_classes=3))
    save_classifier(small, ["a", "b", "c"], tmp_path / "clf")
    meta = json.loads((tmp_path / "clf" / "config.json").read_text())
    meta["config"]["width"] = 16  # the weights no longer fit the configuration
    (tmp_path / "clf" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shape"):
        load_classifier(tmp_path / "clf")
    with pytest.raises(FileNotFoundError):
        load_classifier(tmp_path / "nothing")


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "shapes"
    write_builtin_images(root / "train", 30, size=16, seed=0)
    write_builtin_images(root / "val", 20, size=16, seed=1)
    return root


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["train-classifier", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_train_classifier_end_to_end(dataset, tmp_path, capsys):
    (dataset / "train" / "circle" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "clf"
    rc, stdout, stderr = _run(capsys, "--data", dataset, "--out", out, "--epochs", 2, "--batch-size", 8,
                              "--image-size", 16, "--device", "cpu")
    assert rc == 0
    assert "trained classifier (tiny, 128-d features, 10 classes, 16 px)" in stdout and "val accuracy" in stdout
    assert "skipped 1 unreadable file(s)" in stderr and "broken.png" in stderr
    model, names = load_classifier(out)
    assert names == sorted(p.name for p in (dataset / "train").iterdir())
    assert model.config.image_size == 16 and model.config.num_classes == 10
    info = json.loads((out / "config.json").read_text())["info"]
    # 31 images in batches of 8: 3 steps per epoch (the engine drops an epoch's last partial batch)
    assert info["epochs"] == 2 and info["steps"] == 2 * 3 and info["train_images"] == 31
    assert info["val_images"] == 20 and 0 <= info["val_accuracy"] <= 1


def test_train_classifier_overwrite_replaces_the_run(dataset, tmp_path, capsys):
    out = tmp_path / "clf"
    argv = ["--data", dataset, "--out", out, "--epochs", 1, "--batch-size", 16, "--image-size", 16, "--device", "cpu"]
    assert _run(capsys, *argv)[0] == 0 and (out / "checkpoints").is_dir()
    rc, _, err = _run(capsys, *argv)
    assert rc == 2 and "--overwrite" in err
    assert _run(capsys, *argv, "--overwrite")[0] == 0  # the earlier run's checkpoints go too: a fresh run
    assert json.loads((out / "config.json").read_text())["info"]["steps"] == 1


def test_train_classifier_is_reproducible(dataset, tmp_path, capsys):
    for name in ("a", "b"):
        assert _run(capsys, "--data", dataset, "--out", tmp_path / name, "--epochs", 1, "--batch-size", 16,
                    "--image-size", 16, "--device", "cpu")[0] == 0
    a, b = (load_classifier(tmp_path / n)[0] for n in "ab")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


def test_train_classifier_errors(dataset, tmp_path, capsys):
    rc, _, err = _run(capsys, "--data", tmp_path / "missing", "--out", tmp_path / "o")
    assert rc == 2 and err.count("\n") == 1 and "missing" in err
    single = tmp_path / "single"
    write_builtin_images(single / "train", 1, size=16)
    rc, _, err = _run(capsys, "--data", single, "--out", tmp_path / "o")
    assert rc == 2 and err.count("\n") == 1 and "needs two or more" in err
    rc, _, err = _run(capsys, "--data", dataset, "--out", tmp_path / "o", "--epochs", 0)
    assert rc == 2 and err.startswith("imagefolder train-classifier: error: --epochs must be at least 1")


def test_a_classifier_written_before_the_engine_still_loads():
    from imagefolder.demo.assets import DEFAULT_ASSETS  # the shipped judge: written by the hand-written loop
    model, names = load_classifier(DEFAULT_ASSETS / "classifier")
    assert len(names) == model.config.num_classes == 10 and not model.training


def test_budgeted_training_stops_on_time_and_writes_the_classifier(dataset, tmp_path):
    from imagefolder.train.classifier_trainer import train_classifier
    s = train_classifier(dataset, tmp_path / "clf", image_size=16, epochs=1000, batch_size=8, device="cpu",
                         time_budget_minutes=0.05, progress=False)
    assert s["stopped_by_budget"] and 0 < s["steps"] < 1000 * 3 and s["seconds"] < 30
    assert s["epochs"] == len(s["history"]) >= 1 and s["history"][-1]["epoch"] == s["epochs"]
    model, _ = load_classifier(tmp_path / "clf")
    info = json.loads((tmp_path / "clf" / "config.json").read_text())["info"]
    assert info["steps"] == s["steps"] and info["val_images"] == 20
