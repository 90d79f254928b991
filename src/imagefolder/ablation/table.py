"""The ablation's table: the paper's numbers beside ours, the paper's claims checked on ours, and a plot.

Our numbers are the demo's evaluation (``demo.evaluation.evaluate``) of each row's tokenizer and generator on the
built-in data: PSNR and the judge's accuracy and FID (in its feature space) of reconstructions stand in for rFID,
the judge's accuracy and FID of samples for gFID, and the linear probes of each branch for the probe column.
Accuracies carry ± one binomial standard error; FIDs have no error bar. A claim "agrees" when our difference in its
direction exceeds two standard errors, "disagrees" when it exceeds two the other way, and is "not resolved"
otherwise.

Writes ``ablation.md``, ``ablation.json`` and ``ablation.png`` into the ablation's output folder.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write
from .rows import NOT_AT_CPU_SCALE, PAPER_ROWS, ROWS_BY_ID

# (metric key, column header, format, higher is better); stderr columns come from KEY_stderr
OURS: list[tuple[str, str, str, bool]] = [
    ("tokenizer_val_psnr", "PSNR dB", ".2f", True),
    ("reconstruction_domain_fid", "judge rFID", ".2f", False),
    ("reconstruction_class_accuracy", "recon. acc.", ".3f", True),
    ("generator_val_loss", "gen. val loss", ".3f", False),
    ("domain_fid", "judge gFID", ".2f", False),
    ("sample_class_accuracy", "sample acc.", ".3f", True),
    ("probe_acc_semantic_branch", "probe: last branch", ".3f", True),
    ("probe_acc_detail_branch", "probe: branch 0", ".3f", True),
]
# the paper's claims that the CPU-scale run can check: (text, row before, row after)
CLAIMS: list[tuple[str, int, int]] = [
    ("quantizer dropout helps", 1, 2),
    ("product quantization with parallel decoding helps at an equal token budget", 3, 4),
    ("semantic regularisation of one branch beats all branches", 5, 6),
]


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def _cell(metrics: dict[str, Any], key: str, spec: str) -> str:
    value, err = metrics.get(key), metrics.get(f"{key}_stderr")
    text = _fmt(value, spec)
    return text + (f" ± {_fmt(err, spec)}" if err is not None and text != "–" else "")


def _probe_stderr(metrics: dict[str, Any], key: str) -> float:
    acc, n = metrics.get(key, math.nan), metrics.get("probe_val_images", 0)
    return math.sqrt(acc * (1 - acc) / n) if n and math.isfinite(acc) else math.nan


def _verdict(diff: float, se: float) -> str:
    if not (math.isfinite(diff) and math.isfinite(se)):
        return "not measured"
    if diff > 2 * se:
        return "agrees"
    if diff < -2 * se:
        return "disagrees"
    return "not resolved (within 2 standard errors)"


def _difference(results: dict[int, dict[str, Any]], before: int, after: int, key: str) -> tuple[float, float]:
    """(after - before, the standard error of the difference) of a metric with a ``_stderr``."""
    a, b = results[before]["metrics"], results[after]["metrics"]
    se = math.hypot(a.get(f"{key}_stderr", math.nan), b.get(f"{key}_stderr", math.nan))
    return b.get(key, math.nan) - a.get(key, math.nan), se


def claims(results: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each claim the finished rows can check: the paper's change in gFID and rFID, ours in sample accuracy (with
    its verdict), judge gFID and judge rFID."""
    out = []
    for text, before, after in CLAIMS:
        if before not in results or after not in results:
            continue
        p0, p1 = ROWS_BY_ID[before], ROWS_BY_ID[after]
        diff, se = _difference(results, before, after, "sample_class_accuracy")
        m0, m1 = results[before]["metrics"], results[after]["metrics"]
        out.append({"claim": f"{text} (row {after} vs row {before})", "paper_gfid": [p0.gfid, p1.gfid],
                    "paper_rfid": [p0.rfid, p1.rfid], "sample_accuracy_change": diff, "stderr": se,
                    "judge_gfid": [m0.get("domain_fid"), m1.get("domain_fid")],
                    "judge_rfid": [m0.get("reconstruction_domain_fid"), m1.get("reconstruction_domain_fid")],
                    "verdict": _verdict(diff, se)})
    for row in (6, 5):
        if row in results:
            m = results[row]["metrics"]
            sem, det = m.get("probe_acc_semantic_branch", math.nan), m.get("probe_acc_detail_branch", math.nan)
            se = math.hypot(_probe_stderr(m, "probe_acc_semantic_branch"), _probe_stderr(m, "probe_acc_detail_branch"))
            out.append({"claim": f"the semantic branch probes higher than the detail branch (row {row})",
                        "semantic": sem, "detail": det, "difference": sem - det, "stderr": se,
                        "verdict": _verdict(sem - det, se)})
            break
    return out


def _claim_lines(found: list[dict[str, Any]]) -> list[str]:
    lines = ["| claim | paper | ours: sample accuracy change | ours: judge gFID | ours: judge rFID | verdict |",
             "| --- | --- | ---: | --- | --- | --- |"]
    for c in found:
        if "paper_gfid" in c:
            paper = f"gFID {c['paper_gfid'][0]:.2f} → {c['paper_gfid'][1]:.2f}, rFID {c['paper_rfid'][0]:.2f} → " \
                    f"{c['paper_rfid'][1]:.2f}"
            lines.append(f"| {c['claim']} | {paper} | {c['sample_accuracy_change']:+.3f} ± {_fmt(c['stderr'], '.3f')} "
                         f"| {_fmt(c['judge_gfid'][0], '.2f')} → {_fmt(c['judge_gfid'][1], '.2f')} | "
                         f"{_fmt(c['judge_rfid'][0], '.2f')} → {_fmt(c['judge_rfid'][1], '.2f')} | {c['verdict']} |")
        else:
            lines.append(f"| {c['claim']} | probe 40.5 (row 6, semantic branch) | probe {_fmt(c['semantic'], '.3f')} "
                         f"vs {_fmt(c['detail'], '.3f')} ({c['difference']:+.3f} ± {_fmt(c['stderr'], '.3f')}) | | | "
                         f"{c['verdict']} |")
    return lines


def _plot(results: dict[int, dict[str, Any]], path: Path) -> None:
    from ..demo.plots import Curve, curves_figure
    from ..viz import save_png
    ids = sorted(results)

    def ours(key: str) -> list[tuple[float, float]]:
        points = [(float(i), results[i]["metrics"].get(key, math.nan)) for i in ids]
        return [(x, y) for x, y in points if isinstance(y, (int, float)) and math.isfinite(y)]

    panels = [Curve("paper: gFID (ImageNet)", [(float(r.id), r.gfid) for r in PAPER_ROWS], unit="row"),
              Curve("paper: rFID (ImageNet)", [(float(r.id), r.rfid) for r in PAPER_ROWS], unit="row")]
    panels += [Curve(f"ours: {header}", ours(key), unit="row") for key, header, _, _ in OURS]
    figure = curves_figure(panels, columns=2)
    if figure is not None:
        save_png(figure, path)


def write_table(out: Path, results: dict[int, dict[str, Any]], command: str) -> dict[str, Path]:
    """Write OUT/ablation.md, ablation.json and ablation.png for the finished rows ``results``."""
    import json
    found = claims(results)
    rows_json = []
    header = ("| row | adds | paper: tokens | rFID | gFID | probe % | ours: positions (codes) | steps tok./gen. | "
              + " | ".join(h for _, h, _, _ in OURS) + " |")
    lines = [header, "|" + " --- |" * (8 + len(OURS))]
    for r in PAPER_ROWS:
        res = results.get(r.id)
        paper = {"tokens": r.tokens, "rfid": r.rfid, "gfid": r.gfid, "probe": r.probe}
        rows_json.append({"row": r.id, "method": r.method, "paper": paper, "ours": res})
        cells = [str(r.id), r.method, str(r.tokens), f"{r.rfid:.2f}", f"{r.gfid:.2f}",
                 "–" if r.probe is None else f"{r.probe:.1f}"]
        if res is None:
            cells += ["not run" if r.cpu else "not at CPU scale", ""] + [""] * len(OURS)
        else:
            m = {**res["metrics"]}
            for key in ("probe_acc_semantic_branch", "probe_acc_detail_branch"):
                m[f"{key}_stderr"] = _probe_stderr(m, key)
            cells += [f"{res['positions']} ({res['codes_per_image']})",
                      f"{res['steps']['tokenizer']} / {res['steps']['generator']}"]
            cells += [_cell(m, key, spec) for key, _, spec, _ in OURS]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({res["seed"] for res in results.values()})
    stopping = sorted({f"tokenizer {res['stopping']['tokenizer']}, generator {res['stopping']['generator']}"
                       for res in results.values()})
    minutes = sum((res["seconds"]["tokenizer"] or 0) + (res["seconds"]["generator"] or 0)
                  + res["seconds"]["evaluation"] for res in results.values()) / 60
    text = [
        "# The ImageFolder ablation at CPU scale", "",
        f"* **Command**: `{command}`",
        f"* **Seed(s)**: {', '.join(map(str, seeds)) or '–'}; **stopping**: {'; '.join(stopping) or '–'}",
        f"* **Training and evaluation time of the finished rows**: {minutes:.1f} min",
        "* **Paper** (rows 1-6; rows 7-8 from the authors' README): ImageNet 256, rFID / gFID (VAR-d16) and "
        "linear-probe top-1 accuracy (%). **Ours**: the built-in "
        "shapes at demo scale, evaluated by a judge classifier that takes no part in training; 'judge rFID' / "
        "'judge gFID' are FIDs of reconstructions / samples in its feature space, accuracies carry ± one standard "
        "error. Positions = the generator's sequence length, codes = positions x branches.",
        "* **Rows 7-8** are not in the paper: the authors' README adds them as advanced training. "
        f"{NOT_AT_CPU_SCALE[0].upper()}{NOT_AT_CPU_SCALE[1:]}.", "",
        *lines, "",
        "## The paper's claims, on these rows", "",
        "A claim agrees when our sample accuracy (or probe) moves its way by more than two standard errors. The "
        "generator's validation loss is not comparable across rows whose codes differ (other vocabularies, other "
        "scales).", "",
        *_claim_lines(found), "",
        "![ablation](ablation.png)", "",
    ]
    paths = {"markdown": out / "ablation.md", "json": out / "ablation.json", "plot": out / "ablation.png"}
    atomic_write(paths["markdown"], lambda tmp: Path(tmp).write_text("\n".join(text)))
    payload = {"command": command, "rows": rows_json, "claims": found}
    atomic_write(paths["json"], lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2, allow_nan=True,
                                                                            default=str) + "\n"))
    _plot(results, paths["plot"])
    return paths
