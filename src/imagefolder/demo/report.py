"""What the demo writes for people: ``metrics.json``, ``report.md`` and the summary table printed at the end.

The report says what was run (command, mode, machine, data), what the models are (the tokenizer's branches,
quantizer dropout and semantic teacher; the judge; the generator), how long each stage took, every number with a
one-line explanation, the targets against what was achieved, the pictures, and notes on anything unusual.
"""
from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_write
from ..models.generator import Generator
from . import recipes

# (key, format, one-line meaning) in report order
METRICS: list[tuple[str, str, str]] = [
    ("sample_class_accuracy", ".3f", "share of generated samples the judge classifier assigns to the class they were "
                                     "generated for (does class conditioning work?)"),
    ("reconstruction_class_accuracy", ".3f", "judge accuracy on tokenizer reconstructions of the validation images "
                                             "(does the class survive tokenization?)"),
    ("val_class_accuracy", ".3f", "judge accuracy on the real validation images: the ceiling of the two above"),
    ("domain_fid", ".2f", "FID between samples and validation images in the judge's feature space (lower is "
                          "better; 0 = the same statistics)"),
    ("reconstruction_domain_fid", ".2f", "the same between reconstructions and the validation images"),
    ("tokenizer_val_psnr", ".2f", "PSNR in dB of the reconstructions against the validation images, both as 8-bit "
                                  "pictures (higher is better; what validation and evaluate report)"),
    ("tokenizer_val_ssim", ".3f", "SSIM of the same pairs (1 = identical)"),
    ("codebook_usage_finest", ".3f", "share of each branch's codebook that the validation images use at the finest "
                                     "scale (mean over branches; low = collapsed codebook)"),
    ("probe_acc_semantic_branch", ".3f", "linear-probe class accuracy of the semantically regularised branch's "
                                         "quantized features"),
    ("probe_acc_detail_branch", ".3f", "the same for the detail branch (the paper: lower than the semantic one)"),
    ("wall_time_s", ".1f", "the whole run, in seconds"),
]


def targets(metrics: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(metric, target text, met) for every target of ``recipes.TARGETS`` and the probe ordering."""
    out = [(key, f">= {goal:g}", bool(metrics[key] >= goal)) for key, goal in recipes.TARGETS.items()]
    out.append(("probe_acc_semantic_branch", "> detail branch",
                bool(metrics["probe_acc_semantic_branch"] > metrics["probe_acc_detail_branch"])))
    return out


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else str(value)


def _value(metrics: dict[str, Any], key: str, spec: str) -> str:
    """A metric as text, with its standard error (``KEY_stderr``) when the metrics have one."""
    err = metrics.get(f"{key}_stderr")
    return _fmt(metrics[key], spec) + (f" ± {_fmt(err, spec)}" if err is not None else "")


def summary_table(metrics: dict[str, Any]) -> str:
    """The plain-text table printed at the end of a run."""
    goals = {key: (text, "yes" if met else "no") for key, text, met in targets(metrics)}
    rows = [(key, _value(metrics, key, spec), *goals.get(key, ("", ""))) for key, spec, _ in METRICS]
    widths = [max(len(r[i]) for r in rows + [("metric", "value", "target", "met")]) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(("metric", "value", "target", "met"), widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n"))


@dataclass
class RunInfo:
    mode: str                                   # "default" or "train"
    command: str
    device: str
    dataset: dict[str, Any]                     # make_dataset's summary of the data the numbers come from
    judge_dir: Path
    assets: Path | None = None                  # default mode: where the models came from
    made_by: str | None = None                  # default mode: the command that trained them (demo.json)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)   # train mode: each trainer's summary
    notes: list[str] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)                 # title -> file name in OUT
    teacher_is_judge: bool = False              # the tokenizer's semantic teacher is the judge's network


def _models(gen: Generator, judge_dir: Path, teacher_is_judge: bool) -> list[str]:
    t, g = gen.tokenizer.config, gen.config
    judge = json.loads((judge_dir / "config.json").read_text())
    jc, jinfo = judge["config"], judge.get("info", {})
    width = jc["width"] * 2 ** (jc["depth"] - 1)
    if t.enc_type == "cnn":
        widths = "/".join(str(t.ch * m) for m in dict.fromkeys(t.encoder_ch_mult))
        nets = (f"conv encoder/decoder (widths {widths}, {2 ** (len(t.encoder_ch_mult) - 1)}x down to a "
                f"{t.latent_side}x{t.latent_side} grid; the branches are channel groups of its map)")
    else:
        vit = {**t.vit_kwargs}
        nets = f"ViT encoder/decoder (width {vit.get('embed_dim', '?')}, depth {vit.get('depth', '?')})"
    scales = ", ".join(f"{s}x{s}" for s in t.v_patch_nums)
    if t.pattern_scales:
        scales += (f"; the first {_count(t.pattern_scales, 'scale')} pick whole latent patches from their own "
                   "codebooks (pattern scales), so one code decides a global layout")
    if t.semantic_guide == "classifier":
        who = (f"the judge classifier's backbone ({width}-d pooled features), so the semantic branch learns the "
               "judge's feature space" if teacher_is_judge else
               f"a small CNN classifier ({t.teacher.get('width', '?')} wide) trained on the same pictures with "
               "another seed; the judge takes no part in training")
        where = (f"branch {t.product_quant - 1} (the last) is" if t.half_sem else "a 1x1 mix of all branches is")
        teacher = (f"{where} pulled toward the frozen teacher's features by a contrastive loss (weight "
                   f"{t.sem_loss_weight:g}); the teacher is {who}")
    elif t.semantic_guide == "dinov2":
        teacher = "a branch is pulled toward a frozen DINOv2 teacher"
    else:
        teacher = "no semantic regularisation"
    judge_acc = jinfo.get("val_accuracy")
    return [
        f"**Tokenizer**: {t.image_size} px images, {nets}, **{t.product_quant} branches** (product "
        f"quantization: each latent position "
        f"gets one code per branch, a 'folded' token) of {t.codebook_size} codes of dimension "
        f"{t.codebook_embed_dim}, residual over {t.num_scales} scales ({scales}); **quantizer dropout**: "
        f"{t.codebook_drop:.0%} of each training batch keeps only a random prefix of at least "
        f"{_count(t.start_drop, 'scale')}; **semantic regularisation**: {teacher}" + (
            f"; **latent perturbation** in training: {t.latent_perturb:.0%} of the code positions take one of "
            f"their {t.latent_perturb_topk - 1} next-nearest codes and the later scales correct the miss"
            if t.latent_perturb else "") + ".",
        f"**Generator**: VAR transformer (depth {g.depth}, width {g.embed_dim}, {g.num_heads} heads) predicting "
        f"both branches' codes of every position of the next scale at once, class-conditional with label dropout "
        f"{g.cond_drop_rate:g} for classifier-free guidance; sampled with cfg {recipes.SAMPLING['cfg']:g} "
        f"({recipes.SAMPLING['cfg_schedule']} over the scales), top-k "
        f"{recipes.SAMPLING['top_k'] or 'off'}, top-p {recipes.SAMPLING['top_p']:g}.",
        f"**Judge**: a small CNN classifier (width {jc['width']}, {width}-d features) trained on the same training "
        f"pictures" + (f", validation accuracy {judge_acc:.3f}" if judge_acc is not None else "") + "; it scores "
        f"samples and reconstructions, and FID is measured in its feature space (`domain:{judge_dir}`).",
    ]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _stages(run: RunInfo) -> list[str]:
    lines = ["| stage | seconds | what |", "| --- | ---: | --- |"]
    for stage, seconds in run.stage_seconds.items():
        s = run.summaries.get(stage, {})
        if stage in ("classifier", "teacher"):
            what = f"{_count(s['epochs'], 'epoch')}, {_count(s['steps'], 'step')}, val accuracy " \
                   f"{_fmt(s['val_accuracy'], '.3f')}"
        elif stage in ("tokenizer", "generator"):
            what = f"{_count(s['steps'], 'step')}, {s['images_per_s']:.1f} images/s"
        elif stage == "dataset":
            what = f"{s['train']} train + {s['val']} val pictures"
        elif stage == "pretokenize":
            what = f"{s['images']} images x 2 flips"
        else:
            what = ""
        lines.append(f"| {stage} | {seconds:.1f} | {what} |")
    return lines


def _prefix_table(metrics: dict[str, Any], scales: int) -> list[str]:
    """Judge accuracy against the number of scales kept from real pictures (0: samples, all: reconstructions)."""
    accs, errs = metrics["prefix_class_accuracy"], metrics["prefix_class_accuracy_stderr"]
    rows = [("0 (plain samples)", _value(metrics, "sample_class_accuracy", ".3f"))]
    rows += [(k, f"{_fmt(accs[k], '.3f')} ± {_fmt(errs[k], '.3f')}") for k in sorted(accs, key=int)]
    rows.append((f"{scales} (reconstructions)", _value(metrics, "reconstruction_class_accuracy", ".3f")))
    return [
        "## Where recognisability is lost", "",
        f"The generator completes {metrics['prefix_images']} validation pictures: it keeps the codes of their first "
        "k scales and samples the later ones for their class. k = 0 gives the samples' accuracy, all scales the "
        "reconstructions'. A large rise from k to k + 1 kept scales means that the generator's own scale k + 1 "
        "loses what the real one carries.", "",
        "| scales kept from the real picture | judge accuracy |", "| --- | ---: |",
        *(f"| {k} | {acc} |" for k, acc in rows), "",
    ]


def _per_class_table(metrics: dict[str, Any]) -> list[str]:
    """Judge accuracy per class on samples, reconstructions and real pictures."""
    keys = ("sample_class_accuracy", "reconstruction_class_accuracy", "val_class_accuracy")
    return [
        "## Per class", "",
        "Which classes the judge recognises in the samples, the reconstructions and the real validation pictures.", "",
        "| class | samples | reconstructions | real |", "| --- | ---: | ---: | ---: |",
        *(f"| {name} | " + " | ".join(_fmt(metrics[f"{k}_per_class"][c], ".2f") for k in keys) + " |"
          for c, name in enumerate(metrics["classes"])), "",
    ]


def write_report(path: Path, run: RunInfo, gen: Generator, metrics: dict[str, Any]) -> None:
    d = run.dataset
    source = (f"the shipped demo model in `{run.assets}`" if run.mode == "default"
              else "models trained from nothing in this run")
    lines = [
        f"# imagefolder demo ({'default' if run.mode == 'default' else 'train'} mode)", "",
        f"ImageFolder tokenizer + VAR generator, {source}, sampled and evaluated on the built-in `{d['dataset']}` "
        "pictures.", "",
        f"* **Command**: `{run.command}`",
        f"* **Machine**: {platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, "
        f"{torch.get_num_threads()} torch threads, device `{run.device}`, torch {torch.__version__}",
        f"* **Data**: `{d['dataset']}` ({d['description']}); {len(d['classes'])} classes ({', '.join(d['classes'])}); "
        f"{d['size']} px; {d['train']} train + {d['val']} validation pictures, seed {d['seed']}",
        *([f"* **Models made by**: `{run.made_by}`"] if run.made_by else []),
        f"* **Wall time**: {metrics['wall_time_s']:.1f} s", "",
        "## Models", "", *(f"* {line}" for line in _models(gen, run.judge_dir, run.teacher_is_judge)), "",
        "## Time", "", *_stages(run), "",
        "## Numbers", "",
        f"{metrics['samples']} samples ({recipes.SAMPLING['per_class']} per class), {metrics['val_images']} "
        f"validation images; linear probes fitted on {metrics['probe_train_images']} training images "
        f"(semantic branch: `{metrics['probe_semantic']}`). Accuracies carry their binomial standard error "
        "(± one standard error over the images judged).", "",
        "| metric | value | meaning |", "| --- | ---: | --- |",
        *(f"| `{key}` | {_value(metrics, key, spec)} | {meaning} |" for key, spec, meaning in METRICS), "",
        "## Targets", "",
        "Targets are set for the shipped model (made by `" + recipes.ship_command() + "`); a quick or short run "
        "is not expected to reach them.", "",
        "| metric | target | achieved | met |", "| --- | --- | ---: | --- |",
        *(f"| `{key}` | {text} | {_fmt(metrics[key], '.3f')} | {'yes' if met else 'no'} |"
          for key, text, met in targets(metrics)), "",
        *_per_class_table(metrics),
        *_prefix_table(metrics, len(gen.patch_nums)),
    ]
    for title, name in run.images.items():
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    if run.notes:
        lines += ["## Notes", "", *(f"* {n}" for n in run.notes), ""]
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines)))
