"""``run_demo``: the whole system end to end, in one of two modes, into one output folder.

* default: the demo model shipped in the package (``assets.DEFAULT_ASSETS``, or ``assets``) on a fresh validation
  set of its dataset (plus a few training pictures for the linear probe);
* train (``DemoSettings.train``): data, judge, tokenizer, codes and generator from nothing (``training.train_all``)
  within a time budget or fixed step counts, then optionally shipped as the new demo model.

Both then sample every class, reconstruct validation images, evaluate (``evaluation.evaluate``) and write
OUT/samples.png, OUT/reconstructions.png, OUT/completions.png, OUT/loss_curves.png (train mode), OUT/metrics.json
and OUT/report.md.
OUT is the demo's own: it must be empty, missing or an earlier demo output (marked by ``MARKER``), which is
cleared first.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..models.generator import Generator
from . import DemoError, recipes
from .assets import DEFAULT_ASSETS, INFO, read_assets, ship
from .evaluation import EvalImages, evaluate
from .report import METRICS, RunInfo, summary_table, write_metrics, write_report
from .training import STAGES, TrainingPlan, announce, train_all

MARKER = ".imagefolder-demo"


@dataclass
class DemoSettings:
    out: Path = Path("runs/demo")
    train: bool = False
    assets: Path = DEFAULT_ASSETS
    dataset: str | None = None            # None: shapes (train), the assets' dataset (default mode)
    budget_minutes: float | None = None   # None: recipes.BUDGET_MINUTES (QUICK_BUDGET_MINUTES with quick)
    quick: bool = False                   # smaller dataset and budget
    classifier_epochs: int | None = None
    teacher_epochs: int | None = None
    tokenizer_steps: int | None = None
    generator_steps: int | None = None
    ship: bool = False                    # copy the trained models into ``assets``
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    command: str = "imagefolder demo"     # for the report


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DemoError(f"--out {out} holds files that are not from the demo; give an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by imagefolder demo; the next demo run into this folder replaces it\n")


def _image_size(generator_dir: Path) -> int:
    from ..checkpoint import read_config
    from ..config import GeneratorConfig
    return GeneratorConfig.from_dict(read_config(generator_dir)["config"]).tokenizer.image_size


def _teacher_is_judge(gen: Generator, judge_dir: Path) -> bool:
    from ..models.classifier import load_classifier
    teacher = getattr(gen.tokenizer, "semantic_model", None)
    if gen.tokenizer.config.semantic_guide != "classifier" or teacher is None:
        return False
    judge, _ = load_classifier(judge_dir)
    theirs = judge.state_dict()
    return all(k in theirs and torch.equal(v.cpu(), theirs[k]) for k, v in teacher.state_dict().items())


def _curves(out: Path, summaries: dict[str, dict[str, Any]]) -> Image.Image | None:
    from .plots import Curve, curves_figure, read_curve
    history = summaries["classifier"]["history"]
    tok, gen = out / "tokenizer" / "metrics.jsonl", out / "generator" / "metrics.jsonl"
    return curves_figure([
        Curve("judge classifier: cross-entropy", [(h["epoch"], h["loss"]) for h in history], unit="epoch"),
        read_curve(tok, "rec", f"tokenizer: reconstruction ({recipes.TOKENIZER['reconstruction_loss'].upper()})"),
        read_curve(tok, "perceptual", "tokenizer: perceptual (teacher's feature maps)"),
        read_curve(tok, "vq", "tokenizer: codebook + commitment"),
        read_curve(tok, "semantic", "tokenizer: semantic (contrastive)"),
        read_curve(gen, "loss", "generator: cross-entropy"),
        read_curve(gen, "acc", "generator: token accuracy"),
    ])


@dataclass
class _Models:
    """Where the models and the data the evaluation uses are, and what making them took."""

    data_dir: Path
    judge_dir: Path
    generator_dir: Path
    summaries: dict[str, dict[str, Any]]
    stage_seconds: dict[str, float]


def _train_mode(s: DemoSettings, dataset: str, out: Path, device: torch.device) -> _Models:
    data = dict(recipes.QUICK_DATASET if s.quick else recipes.DATASET)
    minutes = s.budget_minutes or (recipes.QUICK_BUDGET_MINUTES if s.quick else recipes.BUDGET_MINUTES)
    plan = TrainingPlan(dataset, data, s.seed, minutes, s.classifier_epochs, s.teacher_epochs, s.tokenizer_steps,
                        s.generator_steps)
    t = train_all(plan, out, device, s.progress)
    return _Models(t.data_dir, t.classifier_dir, t.generator_dir / "last", t.summaries, t.stage_seconds)


def _default_mode(s: DemoSettings, dataset: str, out: Path) -> _Models:
    from ..data.make_dataset import make_dataset
    announce(1, 2, f"data: {dataset} validation pictures ({recipes.DATASET['val_per_class']} per class) and "
                   f"{recipes.PROBE_TRAIN_PER_CLASS} training pictures per class for the probe")
    t0 = time.perf_counter()
    made = make_dataset(dataset, out / "data", size=_image_size(s.assets / "generator"),
                        train_per_class=recipes.PROBE_TRAIN_PER_CLASS, val_per_class=recipes.DATASET["val_per_class"],
                        seed=s.seed, progress=s.progress)
    return _Models(out / "data", s.assets / "classifier", s.assets / "generator",
                   {"dataset": {k: v for k, v in made.items() if k != "out"}}, {"dataset": time.perf_counter() - t0})


def _dataset(s: DemoSettings, shipped: dict[str, Any]) -> str:
    """The dataset to use: --dataset, else the one the shipped model was trained on, else shapes."""
    from ..data.make_dataset import DATASETS
    trained_on = shipped.get("dataset", {}).get("name")
    dataset = s.dataset or trained_on or "shapes"
    if dataset not in DATASETS:
        raise DemoError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if trained_on and dataset != trained_on:
        raise DemoError(f"the demo model in {s.assets} was trained on {trained_on}; use --train to train one on "
                        f"{dataset}")
    return dataset


def _pictures(out: Path, gen: Generator, images: EvalImages, classes: list[str], curves: bool,
              summaries: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Write samples.png, reconstructions.png and (``curves``) loss_curves.png; returns report title -> file."""
    from ..viz import save_png
    from .plots import progression_figure, samples_grid
    save_png(samples_grid(images.samples_N3HW, images.sample_labels_N, classes, per_row=10), out / "samples.png")
    sides = gen.tokenizer.v_patch_nums
    save_png(progression_figure(images.originals_B3HW, images.steps, [f"{s}x{s}" for s in sides], images.row_labels),
             out / "reconstructions.png")
    save_png(progression_figure(images.originals_B3HW, images.completions,
                                [f"keep {k}" for k in range(len(sides) + 1)], images.row_labels),
             out / "completions.png")
    written = {"Samples (one row per class)": "samples.png",
               "Reconstructions (original, then after 1, 2, ... scales)": "reconstructions.png",
               "Completions (original, then the generator's completion of it from its first 0, 1, ... scales)":
               "completions.png"}
    figure = _curves(out, summaries) if curves else None
    if figure is not None:
        save_png(figure, out / "loss_curves.png")
        written["Training curves"] = "loss_curves.png"
    return written


def run_demo(s: DemoSettings) -> dict[str, Any]:
    """Run the demo; returns the metrics (also in OUT/metrics.json). Raises ``FileNotFoundError`` when the default
    mode finds no demo model, ``DemoError`` for an unusable OUT or mismatched models and data."""
    from ..distributed import pick_device
    from ..loading import load_generator

    if s.ship and not s.train:
        raise DemoError("--ship needs --train: it ships the models a training run makes")
    start = time.perf_counter()
    device = pick_device(s.device)
    shipped = {} if s.train else read_assets(s.assets)
    dataset = _dataset(s, shipped)
    out = Path(s.out)
    _prepare_out(out)
    torch.manual_seed(s.seed)
    notes: list[str] = []
    if s.train:
        models = _train_mode(s, dataset, out, device)
    else:
        models = _default_mode(s, dataset, out)
        if not shipped:
            notes.append(f"{s.assets} has no {INFO}: the models are taken to be trained on {dataset}")

    total = STAGES if s.train else 2
    announce(total, total, "evaluation: samples of every class, reconstructions, judge, linear probes")
    t0 = time.perf_counter()
    gen = load_generator(models.generator_dir).to(device)
    metrics, images = evaluate(gen, models.judge_dir, models.data_dir, device, s.progress, notes)
    written = _pictures(out, gen, images, metrics["classes"], s.train, models.summaries)
    models.stage_seconds["evaluation"] = time.perf_counter() - t0
    teacher_is_judge = _teacher_is_judge(gen, models.judge_dir)
    if teacher_is_judge:
        notes.append("The judge is also the tokenizer's semantic teacher, so the reconstruction class accuracy and "
                     "the semantic probe are measured in the feature space the tokenizer was taught; the detail "
                     "branch's probe and PSNR are the independent checks.")
    mode = "train" if s.train else "default"
    metrics["wall_time_s"] = time.perf_counter() - start
    metrics.update(mode=mode, device=str(device), dataset=models.summaries["dataset"],
                   stage_seconds=models.stage_seconds)
    run = RunInfo(mode, s.command, str(device), models.summaries["dataset"], models.judge_dir,
                  None if s.train else s.assets, shipped.get("command"), models.stage_seconds, models.summaries,
                  notes, written, teacher_is_judge)
    write_report(out / "report.md", run, gen, metrics)
    write_metrics(out / "metrics.json", metrics)
    if s.ship:
        made = models.summaries["dataset"]
        info = {"dataset": {"name": dataset, **{k: made[k] for k in ("size", "seed", "train_per_class",
                                                                      "val_per_class")}},
                "command": s.command, "metrics": {k: metrics[k] for k, _, _ in METRICS}}
        ship(models.generator_dir, models.judge_dir, info, Path(s.assets))
        print(f"shipped the demo model to {s.assets}")
    print(summary_table(metrics))
    print(f"report: {out / 'report.md'}  (wall time {metrics['wall_time_s']:.1f} s)")
    return metrics
