"""The training half of ``imagefolder demo --train``: data, judge classifier, tokenizer, codes cache, generator.

Stages, each in its own folder under OUT:

1. ``data/``: a built-in dataset (``make_dataset``; train = stream 0, val = stream 1 of the seed);
2. ``classifier/``: the judge (``train_classifier``), which only scores: no model is trained against it;
3. ``teacher/``: a second classifier (``recipes.TEACHER``), seed + ``recipes.TEACHER_SEED_OFFSET``: the
   tokenizer's frozen semantic teacher and the network of its perceptual loss;
4. ``tokenizer/``: two branches of product-quantized multi-scale codes, quantizer dropout, the last branch
   regularised toward the teacher's features (``TokenizerTrainer``; ``tokenizer/last`` is used);
5. ``codes.safetensors``: the training set tokenized once, as is and mirrored (``pretokenize``);
6. ``generator/``: the class-conditional VAR model on those codes (``GeneratorTrainer``; ``generator/last``).

Stopping rule per stage: a fixed count (``--classifier-epochs``, ``--teacher-epochs``, ``--tokenizer-steps``,
``--generator-steps``; the lr schedule then spans about that many steps) or a share of the time budget
(``StageClock``: each trainer gets its share of the time still left, so a stage that ends early leaves its time to
the later ones; the trainer's lr schedule follows its clock).

The stages are also functions of their own (``train_classifier_stage``, ``train_tokenizer_stage``,
``pretokenize_stage``, ``train_generator_stage``), which the ablation (``imagefolder.ablation``) runs per row.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from . import DemoError, recipes

T = TypeVar("T")

STAGES = 7                # the numbered lines of a train-mode run (the last is the evaluation)
MIN_STAGE_SECONDS = 5.0   # a trainer always gets at least this long, even when the budget is spent


@dataclass
class TrainingPlan:
    dataset: str                          # a key of data.make_dataset.DATASETS
    data: dict[str, Any]                  # make_dataset's size, train_per_class, val_per_class
    seed: int
    budget_minutes: float
    classifier_epochs: int | None = None  # fixed counts (None: the time budget decides)
    teacher_epochs: int | None = None
    tokenizer_steps: int | None = None
    generator_steps: int | None = None


@dataclass
class TrainingResult:
    data_dir: Path
    classifier_dir: Path
    teacher_dir: Path
    tokenizer_dir: Path
    generator_dir: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)   # per stage, what its trainer returned


class StageClock:
    """Splits a time budget between trainers as they come; ``1 - sum(shares)`` is kept for the other stages."""

    def __init__(self, minutes: float, shares: dict[str, float]):
        self.total_s = 60 * minutes
        self.start = time.perf_counter()
        self.pending = dict(shares)
        self.reserve = max(0.0, 1.0 - sum(shares.values()))

    def minutes_for(self, stage: str) -> float:
        share = self.pending.pop(stage)
        left = self.total_s - (time.perf_counter() - self.start)
        fraction = share / (share + sum(self.pending.values()) + self.reserve)
        return max(left * fraction, MIN_STAGE_SECONDS) / 60


def _epochs_for(steps: int, images: int, batch: int) -> int:
    """Epochs whose steps (``images // batch`` each, last partial batch dropped) first reach ``steps``."""
    per_epoch = images // batch
    if per_epoch == 0:
        raise DemoError(f"the training set ({images} images) is smaller than one batch of {batch} images")
    return max(1, math.ceil(steps / per_epoch))


def stopping(recipe: dict[str, Any], steps: int | None, images: int, clock: StageClock, stage: str) -> dict[str, Any]:
    """Option overrides that stop a trainer after ``steps`` steps, or else at its share of the time budget."""
    if steps is not None:
        return {"max_steps": steps, "epochs": _epochs_for(steps, images, recipe["global_batch_size"]),
                "time_budget_minutes": None}
    return {"time_budget_minutes": clock.minutes_for(stage)}


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX-512 BF16 or AMX). Without it bf16 autocast trains
    2-3x slower than fp32 (BENCHMARKS.md), so the demo's recipes fall back to fp32 there."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def generator_recipe(stop: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The demo's generator for a stage stopped by ``stop`` on ``device``: ``recipes.GENERATOR``; or, when a time
    budget gives it less than ``recipes.LARGE_GENERATOR_MIN_MINUTES``, ``recipes.SMALL_GENERATOR``, compiled under
    bf16 when the stage has at least ``recipes.COMPILE_MIN_MINUTES``. On a CPU without native bf16, in fp32."""
    minutes = stop["time_budget_minutes"]
    if minutes is None or minutes >= recipes.LARGE_GENERATOR_MIN_MINUTES:
        recipe = recipes.GENERATOR
    elif minutes >= recipes.COMPILE_MIN_MINUTES:
        recipe = {**recipes.SMALL_GENERATOR, "compile": True, "mixed_precision": "bf16"}
    else:
        recipe = recipes.SMALL_GENERATOR
    if recipe["mixed_precision"] == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        recipe = {**recipe, "mixed_precision": "none"}
    return recipe


def announce(step: int, total: int, text: str) -> None:
    """The line that opens a stage of the demo."""
    print(f"[{step}/{total}] {text}", flush=True)


def train_all(plan: TrainingPlan, out: Path, device: torch.device, progress: bool) -> TrainingResult:
    """Run the five training stages into ``out``; returns where the models are, the stage times and summaries."""
    from ..data.make_dataset import make_dataset

    clock = StageClock(plan.budget_minutes, recipes.BUDGET_SHARES)
    res = TrainingResult(out / "data", out / "classifier", out / "teacher", out / "tokenizer", out / "generator")
    size = plan.data["size"]

    def timed(stage: str, fn: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        value = fn()
        res.stage_seconds[stage] = time.perf_counter() - t0
        return value

    announce(1, STAGES, f"dataset: {plan.dataset}, {plan.data['train_per_class']} train + "
                        f"{plan.data['val_per_class']} val pictures per class, {size} px, seed {plan.seed}")
    made = timed("dataset", lambda: make_dataset(plan.dataset, res.data_dir, size=size,
                                                  train_per_class=plan.data["train_per_class"],
                                                  val_per_class=plan.data["val_per_class"], seed=plan.seed,
                                                  progress=progress))
    res.summaries["dataset"] = {k: v for k, v in made.items() if k != "out"}
    n_train = made["train"]

    for stage, step, folder, count in (("classifier", 2, res.classifier_dir, plan.classifier_epochs),
                                       ("teacher", 3, res.teacher_dir, plan.teacher_epochs)):
        budget = None if count is not None else clock.minutes_for(stage)
        res.summaries[stage] = timed(stage, lambda: train_classifier_stage(
            stage, res.data_dir, folder, size=size, seed=plan.seed, epochs=count, budget_minutes=budget,
            device=device, progress=progress, step=step))

    recipe = recipes.demo_tokenizer()
    stop = stopping(recipe, plan.tokenizer_steps, n_train, clock, "tokenizer")
    extras = (f"{recipe['pattern_scales']} pattern scales, " if recipe.get("pattern_scales") else "") + (
        "latent perturbation, " if recipe.get("latent_perturb") else "")
    announce(4, STAGES, f"tokenizer: {recipe['product_quant']}-branch product quantization, {extras}quantizer "
             "dropout, semantic branch and perceptual loss from the teacher; " + stop_text(stop))
    res.summaries["tokenizer"] = timed("tokenizer", lambda: train_tokenizer_stage(
        recipe, stop, res.data_dir, res.teacher_dir, res.classifier_dir, res.tokenizer_dir, size=size,
        seed=plan.seed, device=device, progress=progress))

    announce(5, STAGES, "pretokenize: the training set's codes, as is and mirrored")
    codes = out / "codes.safetensors"
    res.summaries["pretokenize"] = timed("pretokenize", lambda: pretokenize_stage(
        res.tokenizer_dir / "last", res.data_dir, codes, device=device, progress=progress))

    stop = stopping(recipes.GENERATOR, plan.generator_steps, n_train, clock, "generator")
    gen_recipe = generator_recipe(stop, device)
    how = ", compiled" if gen_recipe["compile"] else ""
    how += ", bf16 autocast" if gen_recipe["mixed_precision"] == "bf16" else ""
    announce(6, STAGES, f"generator: class-conditional VAR over the folded tokens, depth {gen_recipe['depth']}, width "
             f"{gen_recipe['embed_dim']}{how}; " + stop_text(stop))
    res.summaries["generator"] = timed("generator", lambda: train_generator_stage(
        gen_recipe, stop, res.data_dir, res.tokenizer_dir / "last", codes, res.generator_dir, seed=plan.seed,
        device=device, progress=progress))
    return res


# the stages, also used one by one by the ablation (imagefolder.ablation) ------------------------------------------
def train_classifier_stage(stage: str, data_dir: Path, out_dir: Path, *, size: int, seed: int, epochs: int | None,
                           budget_minutes: float | None, device: torch.device, progress: bool,
                           step: int | None = None) -> dict[str, Any]:
    """The judge (``stage`` "classifier", ``recipes.CLASSIFIER``, ``seed``) or the teacher ("teacher",
    ``recipes.TEACHER``, seed + ``recipes.TEACHER_SEED_OFFSET``): ``epochs`` fixed, or else the recipe's epochs
    within ``budget_minutes``. ``step`` numbers the announcement line (None: no line)."""
    from ..train.classifier_trainer import train_classifier
    c, what = ((recipes.CLASSIFIER, "judge classifier") if stage == "classifier"
               else (recipes.TEACHER, "teacher classifier"))
    seed = seed if stage == "classifier" else seed + recipes.TEACHER_SEED_OFFSET
    epochs = epochs if epochs is not None else c["epochs"]
    if step is not None:
        announce(step, STAGES, f"{what} ({c['preset']}, seed {seed}): " + (
            f"{epochs} epochs" if budget_minutes is None else f"up to {epochs} epochs in {budget_minutes:.1f} min"))
    return train_classifier(data_dir, out_dir, preset=c["preset"], image_size=size, epochs=epochs,
                            batch_size=c["batch_size"], lr=c["lr"], weight_decay=c["weight_decay"], seed=seed,
                            device=device, time_budget_minutes=budget_minutes, progress=progress)


def train_tokenizer_stage(recipe: dict[str, Any], stop: dict[str, Any], data_dir: Path, teacher_dir: Path,
                          judge_dir: Path, out_dir: Path, *, size: int, seed: int, device: torch.device,
                          progress: bool) -> dict[str, Any]:
    """Train a tokenizer of ``recipe`` (keys of ``TokenizerTrainOptions`` and its model config) into ``out_dir``;
    the teacher is its semantic teacher and perceptual network, the judge's space measures its rFID."""
    from ..distributed import DistInfo
    from ..train.options import TOKENIZER_ACCEPTED_ONLY, TokenizerTrainOptions, load_options
    from ..train.tokenizer_trainer import TokenizerTrainer
    values = {**recipe, **stop, "image_size": size, "data_path": str(data_dir),
              "val_data_path": str(data_dir / "val"), "semantic_teacher": str(teacher_dir),
              "perceptual_net": f"classifier:{teacher_dir}",
              "rfid_features": f"domain:{judge_dir}",  # the judge's space (Inception would need a download)
              "global_seed": seed, "device": device.type, "cloud_save_path": str(out_dir)}
    opts, model_config = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, None, values)
    return TokenizerTrainer(opts, model_config, out_dir, DistInfo(0, 1, 0, device), show_progress=progress).fit()


def pretokenize_stage(tokenizer_dir: Path, data_dir: Path, codes: Path, *, device: torch.device,
                      progress: bool) -> dict[str, Any]:
    """The training set's codes (as is and mirrored) under the tokenizer ``tokenizer_dir``, written to ``codes``."""
    from ..loading import load_tokenizer
    from ..train.pretokenize import pretokenize
    return pretokenize(load_tokenizer(tokenizer_dir), data_dir / "train", codes, device=device,
                       show_progress=progress)


def train_generator_stage(recipe: dict[str, Any], stop: dict[str, Any], data_dir: Path, tokenizer_dir: Path,
                          codes: Path, out_dir: Path, *, seed: int, device: torch.device,
                          progress: bool) -> dict[str, Any]:
    """Train a generator of ``recipe`` on the codes cache ``codes`` of the tokenizer ``tokenizer_dir``."""
    from ..distributed import DistInfo
    from ..train.generator_trainer import GeneratorTrainer
    from ..train.options import GENERATOR_ACCEPTED_ONLY, GeneratorTrainOptions, load_options
    values = {**recipe, **stop, "data_path": str(data_dir), "val_data_path": str(data_dir / "val"),
              "tokenizer": str(tokenizer_dir), "codes_cache": str(codes), "global_seed": seed,
              "device": device.type, "cloud_save_path": str(out_dir)}
    opts, model_config = load_options(GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY, None, values)
    return GeneratorTrainer(opts, model_config, out_dir, DistInfo(0, 1, 0, device), show_progress=progress).fit()


def stop_text(stop: dict[str, Any]) -> str:
    if stop["time_budget_minutes"] is None:
        return f"{stop['max_steps']} steps"
    return f"{stop['time_budget_minutes']:.1f} min"
