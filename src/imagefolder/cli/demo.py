"""``imagefolder demo``: see the whole system work on a CPU: data, tokenizer, generator, samples and numbers.

Default mode (under a minute): the small tokenizer + generator shipped inside the package (trained on the
built-in shapes pictures) and its judge classifier. It writes a fresh validation set, samples every class,
reconstructs validation images scale by scale, evaluates and writes the report.

--train: the whole pipeline from nothing on this machine within --budget-minutes (default 15; --quick: a smaller
dataset and 2 minutes): make the dataset, train the judge classifier (it only scores) and a teacher classifier
(another seed), the tokenizer (two product-quantized branches, quantizer dropout, the last branch taught by the
frozen teacher, a perceptual loss in the teacher's feature maps), tokenize the training set once, train the
generator; then the same sampling and evaluation. Each trainer gets its share of the
time still left (the shares are below; the rest is for data, codes and evaluation), or a fixed count with
--classifier-epochs / --teacher-epochs / --tokenizer-steps / --generator-steps. --ship copies the trained generator
(with its tokenizer) and classifier into --assets, replacing the shipped demo model.

Output in OUT (default runs/demo, replaced by the next demo run): samples.png (one row per class),
reconstructions.png (per-scale progression), completions.png (the generator completing validation pictures from
their first 0, 1, ... scales), loss_curves.png (--train), metrics.json, report.md; --train also
keeps the data, the checkpoints and the training logs there.
"""
from __future__ import annotations

import argparse
import shlex

from . import UsageError, stage_interrupted, stop_on_signals

DEFAULTS = {"out": "runs/demo", "device": "auto", "seed": 0}  # left out of the recorded command
FIXED_COUNTS = ("classifier_epochs", "teacher_epochs", "tokenizer_steps", "generator_steps")


def add_parser(sub) -> None:
    from ..data.make_dataset import DATASETS
    from ..demo.assets import DEFAULT_ASSETS
    from ..demo.recipes import (BUDGET_MINUTES, BUDGET_SHARES, COMPILE_MIN_MINUTES, LARGE_GENERATOR_MIN_MINUTES,
                                 QUICK_BUDGET_MINUTES, ship_command)
    shares = ", ".join(f"{stage} {share:.0%}" for stage, share in BUDGET_SHARES.items())
    extra = f"\nBudget shares: {shares}. The shipped demo model is made by: {ship_command()}\n"
    p = sub.add_parser("demo", help="the whole system end to end on a CPU: samples, reconstructions, numbers, report",
                       description=__doc__.replace("``", "") + extra,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", action="store_true", help="train everything from nothing instead of using the "
                   "shipped demo model")
    p.add_argument("--budget-minutes", type=float, metavar="M",
                   help=f"--train: total minutes (default: {BUDGET_MINUTES:g}, {QUICK_BUDGET_MINUTES:g} with --quick)")
    p.add_argument("--quick", action="store_true", help="--train: a smaller dataset and a 2-minute budget (a smoke "
                   "test of the pipeline; the models stay weak)")
    p.add_argument("--classifier-epochs", type=int, metavar="N",
                   help="--train: fixed epochs of the judge classifier instead of the clock")
    p.add_argument("--teacher-epochs", type=int, metavar="N",
                   help="--train: fixed epochs of the teacher classifier instead of the clock")
    p.add_argument("--tokenizer-steps", type=int, metavar="N", help="--train: fixed steps instead of the clock")
    p.add_argument("--generator-steps", type=int, metavar="N",
                   help="--train: fixed steps instead of the clock. Fixed steps, or a budget that gives the generator at "
                        f"least {LARGE_GENERATOR_MIN_MINUTES:g} minutes, train the shipped depth-6 generator (compiled, "
                        "bf16); a shorter budget trains the small depth-4 one, which learns more in that time "
                        f"(compiled, bf16, from {COMPILE_MIN_MINUTES:g} minutes). On a CPU without native bf16 "
                        "(AVX-512 BF16 or AMX) both train in fp32")
    p.add_argument("--ship", action="store_true", help="--train: copy the trained models into --assets (written "
                   "aside, then swapped in)")
    p.add_argument("--assets", metavar="DIR", help="the demo model folder: generator/, classifier/, demo.json "
                   f"(default: the package's, {DEFAULT_ASSETS})")
    p.add_argument("--dataset", choices=tuple(DATASETS),
                   help="built-in dataset (default: shapes; in default mode, the one the demo model was trained on)")
    p.add_argument("--out", default=DEFAULTS["out"], metavar="DIR", help="output folder (default: runs/demo)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=DEFAULTS["device"],
                   help="auto (default): the GPU when there is one, else the CPU")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="seed of the pictures and the training runs (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _check(args) -> None:
    train_only = [name for name in ("budget_minutes", *FIXED_COUNTS)
                  if getattr(args, name) is not None] + [name for name in ("quick", "ship") if getattr(args, name)]
    if train_only and not args.train:
        raise UsageError(f"--{train_only[0].replace('_', '-')} needs --train")
    for name in FIXED_COUNTS:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.budget_minutes is not None and not args.budget_minutes > 0:
        raise UsageError(f"--budget-minutes must be positive, got {args.budget_minutes}")


def _command(args) -> str:
    """The command line that reproduces this run (for the report and the shipped model's record)."""
    parts = ["imagefolder", "demo"]
    for name in ("train", "quick", "ship", "no_progress"):
        if getattr(args, name):
            parts.append(f"--{name.replace('_', '-')}")
    for name in ("budget_minutes", *FIXED_COUNTS, "dataset", "assets", "out", "device", "seed"):
        value = getattr(args, name)
        if value is not None and value != DEFAULTS.get(name):
            parts += [f"--{name.replace('_', '-')}", str(value)]
    return shlex.join(parts)


def run(args) -> int:
    from pathlib import Path

    from ..demo import DemoError
    from ..demo.assets import DEFAULT_ASSETS
    from ..demo.pipeline import DemoSettings, run_demo
    from ..distributed import pick_device
    from ..train.control import Interrupted
    _check(args)
    try:
        pick_device(args.device)
    except RuntimeError as e:
        raise UsageError(f"--device {args.device}: {e}") from None
    settings = DemoSettings(
        out=Path(args.out), train=args.train, assets=Path(args.assets or DEFAULT_ASSETS), dataset=args.dataset,
        budget_minutes=args.budget_minutes, quick=args.quick, classifier_epochs=args.classifier_epochs,
        teacher_epochs=args.teacher_epochs, tokenizer_steps=args.tokenizer_steps,
        generator_steps=args.generator_steps, ship=args.ship,
        device=args.device, seed=args.seed, progress=not args.no_progress, command=_command(args))
    try:
        with stop_on_signals():  # SIGTERM / SIGINT: one line, exit 128 + signal (main)
            run_demo(settings)
    except DemoError as e:
        raise UsageError(str(e)) from None
    except Interrupted as e:  # during a trainer: it saved its checkpoint, but a demo run does not continue one
        raise stage_interrupted(e, f"the next demo run into {args.out} starts afresh") from None
    return 0
