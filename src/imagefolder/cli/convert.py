"""``imagefolder convert``: official checkpoint -> our format, or ours -> official."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert an official checkpoint to our format (safetensors + config.json), or back",
        description="Convert between the authors' checkpoint format and ours. An official tokenizer .pt "
                    "(imagenet-4096.pt, ...) or VAR .pt (imagenet-var-4096.pt) becomes a directory with "
                    "config.json and model.safetensors; one of our directories becomes an official .pt file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="official .pt/.pth file, or one of our checkpoint directories")
    p.add_argument("--out", required=True,
                   help="output: a directory (from official) or a .pt file path (to official)")
    p.add_argument("--tokenizer", default=None,
                   help="only for VAR files whose args do not describe their tokenizer (the reference test "
                        "checkpoints): a tokenizer checkpoint, our directory or a preset name giving its shape")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..loading import convert
    kind, path = convert(args.checkpoint, args.out, tokenizer=args.tokenizer)
    print(f"wrote {kind} to {path}")
    return 0
