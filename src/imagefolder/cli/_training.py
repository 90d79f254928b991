"""What the training commands share: ``--config``, ``--out``, ``--max-steps``, ``--resume``, ``--key value``
overrides of any config key, process-group setup, and the end-of-run summary."""
from __future__ import annotations

import argparse


def add_training_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--config", metavar="YAML", help=f"{what} configuration file (see configs/ for recipes); keys can "
                   "also be given on the command line as --key value and override the file")
    p.add_argument("--out", metavar="DIR", help="output folder: checkpoints/, last/, best/, log.txt, tb/ "
                   "(default: the config's cloud_save_path)")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimizer steps (the lr schedule still "
                   "spans the configured epochs)")
    p.add_argument("--resume", metavar="auto|PATH", help="continue a run: 'auto' = the newest complete checkpoint in "
                   "OUT (starts fresh when there is none); PATH = a checkpoint file or folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to OUT/log.txt)")


def collect_overrides(args: argparse.Namespace, extra: list[str]) -> dict:
    """The --key value tokens argparse did not know, plus --max-steps, parsed as YAML values."""
    from ..train.options import parse_overrides
    over = parse_overrides(extra)
    if args.max_steps is not None:
        over["max_steps"] = args.max_steps
    return over


def run_training(trainer_cls, opts, model_config, args) -> int:
    """Join the process group (torchrun), train, print the summary; non-main processes stay quiet."""
    from ..distributed import init_from_env, shutdown
    from ..train.state import resolve_resume
    out = args.out or opts.cloud_save_path
    info = init_from_env(opts.device)
    try:
        resume = resolve_resume(args.resume, out)
        trainer = trainer_cls(opts, model_config, out, info, resume=resume, show_progress=not args.no_progress)
        summary = trainer.fit()
    finally:
        shutdown()
    if info.is_main:
        val = ", ".join(f"{k} {v:.4g}" for k, v in summary["last_val"].items() if "_b" not in k)
        print(f"trained {summary['steps']} steps in {summary['seconds']:.1f} s "
              f"({summary['images_per_s']:.1f} images/s); skipped {summary['nonfinite_skipped']} non-finite "
              f"steps and {summary['bad_files']} unreadable files" + (f"; validation: {val}" if val else ""))
        print(f"model: {out}/last" + (f" (best: {out}/best)" if opts.save_best and summary["last_val"] else ""))
    return 0
