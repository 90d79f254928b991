"""What the training commands share: ``--config``, ``--out``, ``--max-steps``, ``--resume``, ``--key value``
overrides of any config key, process-group setup, and the end-of-run summary."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_training_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--config", metavar="YAML", help=f"{what} configuration file (see configs/ for recipes); keys can "
                   "also be given on the command line as --key value and override the file")
    p.add_argument("--out", metavar="DIR", help="output folder: checkpoints/, last/, best/, log.txt, tb/ "
                   "(default: the config's cloud_save_path)")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimizer steps (the lr schedule still "
                   "spans the configured epochs)")
    p.add_argument("--resume", metavar="auto|PATH", help="continue a run: 'auto' = the newest complete checkpoint in "
                   "OUT (starts fresh when there is none); PATH = a checkpoint file or folder")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an OUT that holds an earlier run: its "
                   "checkpoints/, last/, best/, tb/, log.txt and metrics.jsonl are deleted first (without this, a "
                   "non-empty OUT is refused unless --resume is given)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to OUT/log.txt)")


def collect_overrides(args: argparse.Namespace, extra: list[str]) -> dict:
    """The --key value tokens argparse did not know, plus --max-steps, parsed as YAML values."""
    from ..train.options import parse_overrides
    over = parse_overrides(extra)
    if args.max_steps is not None:
        over["max_steps"] = args.max_steps
    return over


RUN_ENTRIES = ("checkpoints", "last", "best", "tb", "wandb", "log.txt", "metrics.jsonl")


def prepare_out(out: str | Path, resume: str | None, overwrite: bool, is_main: bool) -> None:
    """Refuse an --out that cannot hold this run: a file, or a non-empty folder without --resume / --overwrite
    (a second run would replace the first one's best/ and mix its checkpoints into --resume auto).
    ``--overwrite`` deletes the earlier run's files (only those a run writes) on the main process."""
    from ..data.images import printable
    from . import UsageError
    from ._outputs import check_kind, remove_outputs
    out = check_kind(out, "folder", purpose="the run")
    if resume and overwrite:
        raise UsageError("--resume continues the run in OUT and --overwrite deletes it: give one of them")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries or resume:
        if resume == "auto" and entries and not (out / "checkpoints").is_dir() and \
                any((out / d).exists() for d in ("last", "best")):
            raise UsageError(f"--resume auto: {printable(str(out))} holds a model but no training checkpoint to "
                             "continue; start afresh with --overwrite or choose another --out")
        return
    if not overwrite:
        ours = [e for e in entries if e in RUN_ENTRIES]
        what = f"the run files {', '.join(ours[:4])}" if ours else f"{len(entries)} other entries (e.g. {entries[0]})"
        raise UsageError(f"--out {printable(str(out))} is not empty ({printable(what)}); continue that run with "
                         "--resume auto, start afresh with --overwrite, or choose another --out")
    if is_main:
        remove_outputs(out, RUN_ENTRIES)


def run_training(trainer_cls, opts, model_config, args) -> int:
    """Join the process group (torchrun), train, print the summary; non-main processes stay quiet.
    SIGTERM / SIGINT during training write a resumable checkpoint, then the command exits with 128 + the signal."""
    import sys

    from ..distributed import barrier, init_from_env, shutdown
    from ..train.control import Interrupted
    from ..train.state import resolve_resume
    out = args.out or opts.cloud_save_path
    info = init_from_env(opts.device)
    try:
        prepare_out(out, args.resume, getattr(args, "overwrite", False), info.is_main)
        barrier()  # the main process has cleared OUT before any process looks at it
        resume = resolve_resume(args.resume, out)
        trainer = trainer_cls(opts, model_config, out, info, resume=resume, show_progress=not args.no_progress)
        summary = trainer.fit()
    except Interrupted as e:
        if info.is_main:
            print(f"imagefolder {args.command}: {e}", file=sys.stderr)
        return 128 + e.signum
    finally:
        shutdown()
    if info.is_main:
        val = ", ".join(f"{k} {v:.4g}" for k, v in summary["last_val"].items() if "_b" not in k)
        print(f"trained {summary['steps']} steps in {summary['seconds']:.1f} s "
              f"({summary['images_per_s']:.1f} images/s); skipped {summary['nonfinite_skipped']} non-finite "
              f"steps and {summary['bad_files']} unreadable files" + (f"; validation: {val}" if val else ""))
        print(f"model: {out}/last" + (f" (best: {summary['best']})" if summary.get("best") else ""))
    return 0
