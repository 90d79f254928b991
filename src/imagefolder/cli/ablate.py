"""``imagefolder ablate``: the ImageFolder paper's ablation, row by row, at a scale a CPU affords.

The paper justifies each idea with one ablation table (8 rows, ImageNet 256: rFID, gFID, probe accuracy). With
--scale cpu this trains rows 1-6 from nothing on the built-in shapes pictures, each a variant of the demo's conv
tokenizer recipe that differs from the row before in what the paper's row adds (1: one branch over every scale
1..8 of the 8x8 grid, 204 positions, no quantizer dropout, no teacher; 2: + quantizer dropout; 3: + the shorter
schedule 1,2,3,4,6,8, 130 positions; 4: + a second branch, predicted in parallel; 5: + semantic regularisation of
all branches; 6: + of the last branch only, the demo recipe). For each row: tokenizer, codes, generator (the
demo's), then the demo's evaluation: reconstruction PSNR, the judge's accuracy and FID of reconstructions and of
samples, the generator's validation loss, and both branches' linear probes. The shared data, judge and teacher
are made once. Rows 7-8 (a stronger, pretrained DINO discriminator; equilibrium enhancement) need pretrained
weights and do not run at this scale; all eight rows' ImageNet recipes are configs/ablation/row*.yaml.

Output in OUT (default runs/ablation): ablation.md (the table with the paper's numbers beside ours and the
paper's claims checked), ablation.json, ablation.png (a plot per metric against the row), and per row rowN/
(result.json, samples.png, reconstructions.png, the checkpoints and logs). The same command continues an
interrupted run: finished stages and rows are kept, never retrained.
"""
from __future__ import annotations

import argparse
import shlex

from . import UsageError, stage_interrupted, stop_on_signals

DEFAULTS = {"out": "runs/ablation", "scale": "cpu", "rows": "1-6", "device": "auto", "seed": 0}


def add_parser(sub) -> None:
    from ..ablation.run import DEFAULT_BUDGET_MINUTES, ROW_SHARES
    from ..data.make_dataset import DATASETS
    shares = ", ".join(f"{stage} {share * 100:.0f}%%" for stage, share in ROW_SHARES.items())
    p = sub.add_parser("ablate", help="the paper's ablation rows at CPU scale, with the paper's numbers beside ours",
                       description=__doc__.replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=("cpu",), default=DEFAULTS["scale"],
                   help="cpu (default): demo-size models on the built-in data, rows 1-6. The ImageNet scale is "
                        "configs/ablation/row*.yaml with imagefolder train-tokenizer / train-generator on GPUs")
    p.add_argument("--rows", default=DEFAULTS["rows"], metavar="LIST",
                   help="rows to train, e.g. 1-6 or 1,2,5 (default: 1-6; rows 7-8 do not run at CPU scale). The "
                        "table shows every finished row in OUT")
    p.add_argument("--tokenizer-steps", type=int, metavar="N",
                   help="fixed tokenizer steps per row (the same for every row, as in the paper) instead of the "
                        "row's share of the budget. The shipped demo model used 2500")
    p.add_argument("--generator-steps", type=int, metavar="N",
                   help="fixed generator steps per row instead of the row's share of the budget. The shipped demo "
                        "model used 3000")
    p.add_argument("--budget-minutes", type=float, metavar="M",
                   help=f"minutes for the rows asked for (default: {DEFAULT_BUDGET_MINUTES:g}, i.e. 4 hours), split "
                        f"equally over them; of a row's minutes, {shares} go to its trainers (a trainer with fixed "
                        "steps ignores its share) and the rest to its codes and evaluation. The shared dataset, "
                        "judge and teacher come on top (fixed epochs, a few minutes). Equal time per row gives the "
                        "rows with more tokens fewer steps; fixed steps compare the rows as the paper does")
    p.add_argument("--out", default=DEFAULTS["out"], metavar="DIR",
                   help="output folder; the same command continues it (default: runs/ablation)")
    p.add_argument("--dataset", choices=tuple(DATASETS), default="shapes", help="built-in dataset (default: shapes)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="seed of the pictures, the judge, the teacher and every row's training (default: 0); run "
                        "other seeds into other --out folders to see the spread between seeds")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=DEFAULTS["device"],
                   help="auto (default): the GPU when there is one, else the CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _command(args) -> str:
    parts = ["imagefolder", "ablate"]
    for name in ("scale", "rows", "tokenizer_steps", "generator_steps", "budget_minutes", "out", "dataset", "seed",
                 "device"):
        value = getattr(args, name)
        if value is not None and value != DEFAULTS.get(name) and not (name == "dataset" and value == "shapes"):
            parts += [f"--{name.replace('_', '-')}", str(value)]
    if args.no_progress:
        parts.append("--no-progress")
    return shlex.join(parts)


def run(args) -> int:
    from pathlib import Path

    from ..ablation import AblationError
    from ..ablation.rows import parse_rows
    from ..ablation.run import AblationSettings, run_ablation
    from ..distributed import pick_device
    from ..train.control import Interrupted
    try:
        rows = tuple(parse_rows(args.rows))
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        pick_device(args.device)
    except RuntimeError as e:
        raise UsageError(f"--device {args.device}: {e}") from None
    settings = AblationSettings(
        out=Path(args.out), scale=args.scale, rows=rows, tokenizer_steps=args.tokenizer_steps,
        generator_steps=args.generator_steps, budget_minutes=args.budget_minutes, dataset=args.dataset,
        seed=args.seed, device=args.device, progress=not args.no_progress, command=_command(args))
    try:
        with stop_on_signals():  # SIGTERM / SIGINT: one line, exit 128 + signal (main)
            run_ablation(settings)
    except AblationError as e:
        raise UsageError(str(e)) from None
    except Interrupted as e:  # during a trainer: it saved its checkpoint; the stage itself starts over when rerun
        raise stage_interrupted(e, "the same command continues the ablation (finished stages are kept, this one "
                                   "starts over)") from None
    return 0
