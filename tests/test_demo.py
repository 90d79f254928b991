"""``imagefolder demo``: the train mode end to end (quick, with test-sized recipes and a few steps per stage), shipping
its models, the default mode on the shipped models, and the one-line errors."""
from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from imagefolder.cli import main
from imagefolder.demo import recipes
from imagefolder.demo.plots import Curve, curves_figure
from imagefolder.demo.training import StageClock, generator_recipe, stopping

from _train_helpers import tiny_demo_recipes

REQUIRED = ("sample_class_accuracy", "reconstruction_class_accuracy", "domain_fid", "tokenizer_val_psnr",
            "codebook_usage_finest", "probe_acc_semantic_branch", "probe_acc_detail_branch", "wall_time_s")
COMMON_FILES = ("samples.png", "reconstructions.png", "completions.png", "report.md", "metrics.json")

_TINY = tiny_demo_recipes()
TEST_RECIPES = {**_TINY, "QUICK_DATASET": _TINY["DATASET"]}
STEPS = ["--classifier-epochs", "1", "--teacher-epochs", "2", "--tokenizer-steps", "2", "--generator-steps", "2"]
REAL_RECIPES = {name: getattr(recipes, name) for name in TEST_RECIPES}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """One quick train-mode run with --ship: (its output folder, the assets folder)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in TEST_RECIPES.items():
            mp.setattr(recipes, name, value)
        root = tmp_path_factory.mktemp("demo")
        out, assets = root / "train", root / "assets"
        rc = main(["demo", "--train", "--quick", *STEPS, "--ship", "--assets", str(assets), "--out", str(out),
                   "--device", "cpu", "--no-progress"])
        yield rc, out, assets, mp
    torch.set_num_threads(threads)


def _finite_metrics(out) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    missing = [k for k in REQUIRED if k not in metrics]
    assert not missing
    assert all(math.isfinite(metrics[k]) for k in REQUIRED), {k: metrics[k] for k in REQUIRED}
    return metrics


def test_train_quick_writes_every_output_and_ships(shipped):
    rc, out, assets, _ = shipped
    assert rc == 0
    for name in (*COMMON_FILES, "loss_curves.png"):
        assert (out / name).is_file(), name
    metrics = _finite_metrics(out)
    assert metrics["mode"] == "train" and metrics["samples"] == 10 * 13 and metrics["val_images"] == 10 * 13
    assert 0 <= metrics["sample_class_accuracy"] <= 1 and 0 < metrics["codebook_usage_finest"] <= 1
    assert metrics["probe_semantic"] == "branch1"
    assert set(metrics["stage_seconds"]) == {"dataset", "classifier", "teacher", "tokenizer", "pretokenize",
                                             "generator", "evaluation"}
    # the judge only scores: the tokenizer's semantic teacher (and perceptual network) is the other classifier
    from imagefolder.loading import load_tokenizer
    from imagefolder.models.classifier import load_classifier
    teacher = load_classifier(out / "teacher")[0].state_dict()
    judge = load_classifier(out / "classifier")[0].state_dict()
    semantic = load_tokenizer(out / "tokenizer" / "last").semantic_model.state_dict()
    assert all(torch.equal(v, teacher[k]) for k, v in semantic.items())
    assert not torch.equal(semantic["body.0.0.weight"], judge["body.0.0.weight"])
    rows = [json.loads(line) for line in (out / "tokenizer" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("perceptual", 0) > 0 for r in rows)
    report = (out / "report.md").read_text()
    for words in ("2 branches", "quantizer dropout", "semantic regularisation", "latent perturbation",
                  "the judge takes no part in training",
                  "![Samples", "loss_curves.png", "## Targets", recipes.ship_command()):
        assert words in report, words
    with Image.open(out / "samples.png") as img:  # 10 rows of 10 samples, upscaled to 64 px, labels on the left
        assert img.height == 10 * (64 + 8) + 8 and img.width > 10 * (64 + 8) + 8
    info = json.loads((assets / "demo.json").read_text())
    assert info["dataset"]["name"] == "shapes" and info["dataset"]["size"] == 16
    assert "--tokenizer-steps 2" in info["command"] and set(REQUIRED) <= set(info["metrics"])
    assert "--classifier-epochs 1 --teacher-epochs 2" in info["command"]
    assert "| classifier |" in report and "| 1 epoch, " in report and "| 2 epochs, " in report
    assert sorted(p.name for p in assets.iterdir()) == ["classifier", "demo.json", "generator"]
    assert not list(assets.parent.glob("*.ship.*"))
    # shipped weights are fp16 copies of the trained ones; loading gives fp32 again
    from safetensors.torch import load_file
    from imagefolder.loading import load_generator
    trained, stored = (load_file(d / "model.safetensors") for d in (out / "generator" / "last", assets / "generator"))
    assert trained.keys() == stored.keys()
    assert all(stored[k].dtype == (torch.float16 if v.dtype == torch.float32 else v.dtype) for k, v in trained.items())
    assert all(torch.equal(stored[k], v.half()) for k, v in trained.items() if v.dtype == torch.float32)
    assert all(p.dtype == torch.float32 for p in load_generator(assets / "generator").parameters())


def test_default_mode_on_the_shipped_assets(shipped, tmp_path, capsys):
    _, _, assets, _ = shipped
    out = tmp_path / "default"
    capsys.readouterr()
    assert main(["demo", "--assets", str(assets), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    for name in COMMON_FILES:
        assert (out / name).is_file(), name
    assert not (out / "loss_curves.png").exists()
    metrics = _finite_metrics(out)
    assert metrics["mode"] == "default" and metrics["dataset"]["size"] == 16
    stdout = capsys.readouterr().out
    assert "sample_class_accuracy" in stdout and "report.md" in stdout
    for key, n in (("sample_class_accuracy", metrics["samples"]), ("reconstruction_class_accuracy",
                                                                    metrics["val_images"])):
        p = metrics[key]
        assert metrics[f"{key}_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / n))
        assert f"{p:.3f} ± {metrics[key + '_stderr']:.3f}" in stdout
    report = (out / "report.md").read_text()
    assert f"| `sample_class_accuracy` | {metrics['sample_class_accuracy']:.3f} ± " in report
    # completions of real pictures from each number of kept scales
    from imagefolder.loading import load_generator
    scales = len(load_generator(assets / "generator").patch_nums)
    prefix = metrics["prefix_class_accuracy"]
    assert list(prefix) == [str(k) for k in range(1, scales)]
    assert metrics["prefix_images"] == min(recipes.PREFIX_IMAGES, metrics["val_images"]) < metrics["val_images"]
    assert all(0 <= a <= 1 for a in prefix.values())
    assert "## Where recognisability is lost" in report and f"| 1 | {prefix['1']:.3f} ± " in report
    assert f"| {scales} (reconstructions) |" in report
    # a second run replaces the first one's output
    assert main(["demo", "--assets", str(assets), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0


def test_one_line_errors(tmp_path, capsys):
    rc = main(["demo", "--assets", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "imagefolder demo --train" in err and "no demo model" in err
    assert not (tmp_path / "o").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    rc = main(["demo", "--train", "--out", str(tmp_path / "busy"), "--tokenizer-steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "not from the demo" in err
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep me"
    assert main(["demo", "--ship"]) == 2 and "--ship needs --train" in capsys.readouterr().err
    assert main(["demo", "--teacher-epochs", "3"]) == 2 and "--teacher-epochs needs --train" in capsys.readouterr().err
    assert main(["demo", "--train", "--teacher-epochs", "0"]) == 2 and "at least 1" in capsys.readouterr().err


def test_stage_clock_hands_unused_time_on():
    clock = StageClock(10.0, {"a": 0.25, "b": 0.25})  # half the budget is kept for the other stages
    assert clock.minutes_for("a") == pytest.approx(10 * 0.25, rel=1e-3)
    assert clock.minutes_for("b") == pytest.approx(10 * (1 / 3), rel=1e-3)  # a's time was not used


def test_curves_figure():
    assert curves_figure([Curve("empty", [])]) is None
    img = curves_figure([Curve("one point", [(1, 2.0)]), Curve("line", [(1, 3.0), (5, 1.0), (9, 0.5)])])
    assert img.size == (2 * 300, 170)


def test_classifier_time_budget(tmp_path):
    from imagefolder.data.make_dataset import make_dataset
    from imagefolder.train.classifier_trainer import train_classifier
    make_dataset("shapes", tmp_path / "data", size=16, train_per_class=4, val_per_class=2)
    s = train_classifier(tmp_path / "data", tmp_path / "clf", image_size=16, epochs=10_000, batch_size=8,
                         device="cpu", time_budget_minutes=0.003, progress=False)
    assert s["stopped_by_budget"] and 1 <= s["epochs"] < 10_000 and s["seconds"] < 10
    assert len(s["history"]) == s["epochs"] and (tmp_path / "clf" / "model.safetensors").is_file()


def test_the_packaged_demo_model_runs(tmp_path, monkeypatch):
    """`imagefolder demo` exactly as a newcomer runs it: the model shipped inside the package, default mode."""
    for name, value in REAL_RECIPES.items():  # the module's `shipped` fixture may have patched them
        monkeypatch.setattr(recipes, name, value)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    for name in COMMON_FILES:
        assert (out / name).is_file(), name
    metrics = _finite_metrics(out)
    assert metrics["dataset"]["size"] == 32 and metrics["val_class_accuracy"] > 0.9  # the shipped judge works
    assert metrics["codebook_usage_finest"] > 0.8
    assert metrics["probe_acc_semantic_branch"] > metrics["probe_acc_detail_branch"]


def test_a_short_generator_budget_trains_the_small_generator(monkeypatch):
    import imagefolder.demo.training as training
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)

    def stop(minutes, steps=None):
        return stopping(recipes.GENERATOR, steps, 5000, StageClock(minutes, {"generator": 0.5}), "generator")
    cpu = torch.device("cpu")
    short = stop(2.0)  # 1 minute of generator: too short to compile
    assert short["time_budget_minutes"] < recipes.COMPILE_MIN_MINUTES
    assert generator_recipe(short, cpu) is recipes.SMALL_GENERATOR and not recipes.SMALL_GENERATOR["compile"]
    medium = stop(12.0)  # 6 minutes: the small generator, compiled
    assert recipes.COMPILE_MIN_MINUTES <= medium["time_budget_minutes"] < recipes.LARGE_GENERATOR_MIN_MINUTES
    small = generator_recipe(medium, cpu)
    assert (small["depth"], small["embed_dim"], small["compile"]) == (
        recipes.SMALL_GENERATOR["depth"], recipes.SMALL_GENERATOR["embed_dim"], True)
    assert small["mixed_precision"] == "bf16"
    assert generator_recipe(stop(60.0), cpu) is recipes.GENERATOR  # 30 minutes of generator
    assert generator_recipe(stop(1.0, steps=3000), cpu)["depth"] == recipes.GENERATOR["depth"]  # fixed steps
    assert (recipes.SMALL_GENERATOR["depth"], recipes.SMALL_GENERATOR["embed_dim"]) != (
        recipes.GENERATOR["depth"], recipes.GENERATOR["embed_dim"])


def test_a_cpu_without_native_bf16_trains_the_generators_in_fp32(monkeypatch):
    import imagefolder.demo.training as training
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    fixed = {"time_budget_minutes": None, "max_steps": 3000}
    monkeypatch.setattr(recipes, "GENERATOR", {**recipes.GENERATOR, "mixed_precision": "bf16"})  # as shipped
    assert generator_recipe(fixed, torch.device("cpu"))["mixed_precision"] == "none"
    assert generator_recipe({"time_budget_minutes": 6.0}, torch.device("cpu"))["mixed_precision"] == "none"
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)
    assert generator_recipe(fixed, torch.device("cpu")) is recipes.GENERATOR
