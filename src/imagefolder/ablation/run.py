"""``run_ablation``: the paper's ablation rows at CPU scale, resumable, into one output folder.

Layout of OUT (default ``runs/ablation``):

* ``shared/``: what every row uses, made once: ``data/`` (the built-in dataset of ``demo.recipes.DATASET``),
  ``classifier/`` (the judge, which only scores), ``teacher/`` (the semantic teacher and perceptual network);
* ``row1/`` ... ``row6/``: ``tokenizer/``, ``codes.safetensors``, ``generator/``, ``samples.png``,
  ``reconstructions.png`` and ``result.json``, the row's numbers;
* ``ablation.md``, ``ablation.json``, ``ablation.png``: the table of every finished row beside the paper's, the
  paper's claims checked, the plot (rewritten after each row).

Every stage writes a small JSON file when it has finished (``shared/STAGE.json``, ``rowN/STAGE.json``); a stage
whose file exists is not run again, and a stage that was interrupted starts over. So the same command continues
where it stopped, and a row whose ``result.json`` exists is never retrained. OUT remembers the settings that the
shared stages depend on (``settings.json``: dataset, data sizes, seed) and refuses to continue with other ones.

Stopping rule per trainer: fixed steps (``tokenizer_steps``, ``generator_steps``), or else a fixed share of the
row's minutes (``budget_minutes`` split equally over the rows asked for, then by ``ROW_SHARES``). Fixed per row,
not taken from a running clock, so a resumed row trains as long as a fresh one. Every row uses the same seed.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..checkpoint import atomic_write
from ..demo import recipes
from ..demo.training import (pretokenize_stage, stop_text, stopping, train_classifier_stage, train_generator_stage,
                             train_tokenizer_stage)
from . import AblationError
from .rows import CPU_ROWS, NOT_AT_CPU_SCALE, ROWS_BY_ID, cpu_generator_recipe, cpu_tokenizer_recipe, tokens

MARKER = ".imagefolder-ablation"
SETTINGS = "settings.json"
DEFAULT_BUDGET_MINUTES = 240.0   # rows 1-6: 40 minutes each on top of the shared stages (a few minutes)
# a row's minutes: tokenizer and generator shares (the demo's 45 : 38); the rest is for codes and evaluation
ROW_SHARES: dict[str, float] = {"tokenizer": 0.5, "generator": 0.42}
SCALES = ("cpu",)


@dataclass
class AblationSettings:
    out: Path = Path("runs/ablation")
    scale: str = "cpu"
    rows: tuple[int, ...] = CPU_ROWS
    tokenizer_steps: int | None = None     # fixed steps per row (None: the row's share of the budget)
    generator_steps: int | None = None
    budget_minutes: float | None = None    # None: DEFAULT_BUDGET_MINUTES
    dataset: str = "shapes"
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    command: str = "imagefolder ablate"


@dataclass
class Shared:
    data_dir: Path
    judge_dir: Path
    teacher_dir: Path
    dataset: dict[str, Any]               # make_dataset's summary
    seconds: dict[str, float] = field(default_factory=dict)


class _RowClock:
    """Fixed minutes per trainer of a row (duck-types ``demo.training.StageClock`` for ``stopping``)."""

    def __init__(self, minutes: float):
        self.minutes = minutes

    def minutes_for(self, stage: str) -> float:
        return self.minutes * ROW_SHARES[stage]


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=2, allow_nan=True, default=str) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _stage(marker: Path, folder: Path | None, fn: Callable[[], dict[str, Any]], done_text: str,
           seconds: dict[str, float]) -> dict[str, Any]:
    """Run ``fn`` unless ``marker`` (its summary) exists; a ``folder`` left by an interrupted run is cleared first."""
    if marker.is_file():
        print(f"    {done_text}: done earlier ({marker.name}), kept", flush=True)
        return json.loads(marker.read_text())
    if folder is not None and folder.exists():
        shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
    t0 = time.perf_counter()
    summary = fn()
    seconds[marker.stem] = time.perf_counter() - t0
    summary = {**summary, "seconds_stage": seconds[marker.stem]}
    _write_json(marker, summary)
    return summary


def _identity(s: AblationSettings) -> dict[str, Any]:
    """What the shared stages depend on: a folder made with another identity cannot be continued."""
    return {"scale": s.scale, "dataset": s.dataset, "data": dict(recipes.DATASET), "seed": s.seed}


def _prepare_out(s: AblationSettings) -> None:
    out = Path(s.out)
    if out.exists() and not out.is_dir():
        raise AblationError(f"--out {out} is a file; give a folder")
    identity = _identity(s)
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise AblationError(f"--out {out} holds files that are not from imagefolder ablate; give an empty or new "
                                "folder")
        before = json.loads((out / SETTINGS).read_text())
        differ = ", ".join(f"{k} {before.get(k)}" for k in identity if before.get(k) != identity[k])
        if differ:
            raise AblationError(f"--out {out} was made with other settings ({differ}); continue it with the same ones "
                                "or give another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by imagefolder ablate; the same command continues it\n")
    _write_json(out / SETTINGS, identity)


def _shared(s: AblationSettings, device: torch.device) -> Shared:
    from ..data.make_dataset import make_dataset
    root = Path(s.out) / "shared"
    d = recipes.DATASET
    sh = Shared(root / "data", root / "classifier", root / "teacher", {})
    print(f"[shared] dataset {s.dataset}: {d['train_per_class']} train + {d['val_per_class']} val pictures per "
          f"class, {d['size']} px, seed {s.seed}; judge and teacher classifiers", flush=True)
    made = _stage(root / "dataset.json", None, lambda: {k: v for k, v in make_dataset(
        s.dataset, sh.data_dir, size=d["size"], train_per_class=d["train_per_class"], val_per_class=d["val_per_class"],
        seed=s.seed, overwrite=True, progress=s.progress).items() if k != "out"}, "dataset", sh.seconds)
    sh.dataset = made
    for stage, folder in (("classifier", sh.judge_dir), ("teacher", sh.teacher_dir)):
        _stage(root / f"{stage}.json", folder, lambda: train_classifier_stage(
            stage, sh.data_dir, folder, size=d["size"], seed=s.seed, epochs=None, budget_minutes=None,
            device=device, progress=s.progress), stage, sh.seconds)
    return sh


def _stops(s: AblationSettings, n_train: int) -> dict[str, dict[str, Any]]:
    minutes = (s.budget_minutes or DEFAULT_BUDGET_MINUTES) / len(s.rows)
    clock = _RowClock(minutes)
    return {"tokenizer": stopping(recipes.TOKENIZER, s.tokenizer_steps, n_train, clock, "tokenizer"),
            "generator": stopping(recipes.SMALL_GENERATOR, s.generator_steps, n_train, clock, "generator")}


def _pictures(row_dir: Path, gen, images, classes: list[str]) -> None:
    from ..demo.plots import progression_figure, samples_grid
    from ..viz import save_png
    save_png(samples_grid(images.samples_N3HW, images.sample_labels_N, classes, per_row=10), row_dir / "samples.png")
    save_png(progression_figure(images.originals_B3HW, images.steps, [f"{p}x{p}" for p in gen.tokenizer.v_patch_nums],
                                images.row_labels), row_dir / "reconstructions.png")


def train_row(row: int, s: AblationSettings, sh: Shared, device: torch.device) -> dict[str, Any]:
    """Tokenizer, codes, generator and evaluation of one row into OUT/rowN; returns (and writes) its result."""
    from ..demo.evaluation import evaluate
    from ..loading import load_generator
    row_dir = Path(s.out) / f"row{row}"
    paper = ROWS_BY_ID[row]
    tok_recipe, gen_recipe = cpu_tokenizer_recipe(row), cpu_generator_recipe(row)
    n_train, size = sh.dataset["train"], sh.dataset["size"]
    stops = _stops(s, n_train)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    print(f"[row {row}] {paper.method}: {tok_recipe['product_quant']} branch(es), scales {tok_recipe['v_patch_nums']} "
          f"({tokens(tok_recipe['v_patch_nums'])} positions), quantizer dropout {tok_recipe['codebook_drop']:g}, "
          f"semantic {tok_recipe['semantic_guide']}{' (last branch)' if tok_recipe['half_sem'] else ''}", flush=True)
    print(f"    tokenizer {stop_text(stops['tokenizer'])}, generator {stop_text(stops['generator'])}", flush=True)
    tok_sum = _stage(row_dir / "tokenizer.json", row_dir / "tokenizer", lambda: train_tokenizer_stage(
        tok_recipe, stops["tokenizer"], sh.data_dir, sh.teacher_dir, sh.judge_dir, row_dir / "tokenizer", size=size,
        seed=s.seed, device=device, progress=s.progress), "tokenizer", seconds)
    codes = row_dir / "codes.safetensors"
    _stage(row_dir / "pretokenize.json", codes, lambda: pretokenize_stage(
        row_dir / "tokenizer" / "last", sh.data_dir, codes, device=device, progress=s.progress), "codes", seconds)
    gen_sum = _stage(row_dir / "generator.json", row_dir / "generator", lambda: train_generator_stage(
        gen_recipe, stops["generator"], sh.data_dir, row_dir / "tokenizer" / "last", codes, row_dir / "generator",
        seed=s.seed, device=device, progress=s.progress), "generator", seconds)

    print("    evaluation: samples, reconstructions, judge, linear probes", flush=True)
    t0 = time.perf_counter()
    gen = load_generator(row_dir / "generator" / "last").to(device)
    notes: list[str] = []
    metrics, images = evaluate(gen, sh.judge_dir, sh.data_dir, device, s.progress, notes)
    _pictures(row_dir, gen, images, metrics["classes"])
    seconds["evaluation"] = time.perf_counter() - t0
    last_val = gen_sum.get("last_val") or {}
    metrics.update(generator_val_loss=last_val.get("loss", float("nan")),
                   generator_val_token_accuracy=last_val.get("acc", float("nan")))
    result = {
        "row": row, "method": paper.method, "scale": s.scale, "seed": s.seed,
        "tokenizer": {k: tok_recipe[k] for k in ("product_quant", "v_patch_nums", "codebook_drop", "start_drop",
                                                  "semantic_guide", "half_sem", "codebook_size", "codebook_embed_dim")},
        "positions": tokens(tok_recipe["v_patch_nums"]),
        "codes_per_image": tokens(tok_recipe["v_patch_nums"]) * tok_recipe["product_quant"],
        "stopping": {stage: stop_text(stop) for stage, stop in stops.items()},
        "steps": {"tokenizer": tok_sum.get("steps"), "generator": gen_sum.get("steps")},
        "seconds": {"tokenizer": tok_sum.get("seconds_stage"), "generator": gen_sum.get("seconds_stage"),
                    "evaluation": seconds["evaluation"], "row_this_run": time.perf_counter() - start},
        "metrics": metrics, "notes": notes, "command": s.command,
    }
    _write_json(row_dir / "result.json", result)
    return result


def read_results(out: Path) -> dict[int, dict[str, Any]]:
    """Every finished row's result in ``out``, by row id."""
    found = {}
    for path in sorted(Path(out).glob("row*/result.json")):
        result = json.loads(path.read_text())
        found[int(result["row"])] = result
    return found


def run_ablation(s: AblationSettings) -> dict[int, dict[str, Any]]:
    """Train and evaluate the rows of ``s`` that are not done yet, then write the table; returns every finished
    row's result. Raises ``AblationError`` for an unusable OUT, another scale or rows that do not run at it."""
    from ..data.make_dataset import DATASETS
    from ..distributed import pick_device
    from .table import write_table
    if s.scale not in SCALES:
        raise AblationError(f"--scale {s.scale}: only {', '.join(SCALES)} runs here; the ImageNet recipes of the "
                            "rows are configs/ablation/row1.yaml ... row8.yaml (imagefolder train-tokenizer)")
    off = [r for r in s.rows if r not in CPU_ROWS]
    if off:
        raise AblationError(f"--rows {','.join(map(str, s.rows))}: {NOT_AT_CPU_SCALE}")
    if s.dataset not in DATASETS:
        raise AblationError(f"unknown dataset {s.dataset!r}; choose one of {', '.join(DATASETS)}")
    for name in ("tokenizer_steps", "generator_steps"):
        if getattr(s, name) is not None and getattr(s, name) < 1:
            raise AblationError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(s, name)}")
    if s.budget_minutes is not None and not s.budget_minutes > 0:
        raise AblationError(f"--budget-minutes must be positive, got {s.budget_minutes}")
    start = time.perf_counter()
    device = pick_device(s.device)
    _prepare_out(s)
    torch.manual_seed(s.seed)
    shared = _shared(s, device)
    for row in s.rows:
        done = Path(s.out) / f"row{row}" / "result.json"
        if done.is_file():
            print(f"[row {row}] done earlier ({done}), not retrained", flush=True)
            continue
        train_row(row, s, shared, device)
        write_table(Path(s.out), read_results(Path(s.out)), s.command)
    results = read_results(Path(s.out))
    paths = write_table(Path(s.out), results, s.command)
    print(f"table: {paths['markdown']}  plot: {paths['plot']}  (this run: {time.perf_counter() - start:.1f} s)")
    return results
