"""``imagefolder train-tokenizer``: train the tokenizer from a YAML config (the authors' keys), on one process or
under ``torchrun --nproc_per_node=N``.

Writes OUT/checkpoints/step-*.pt (full training state, atomic; --resume auto continues from the newest),
OUT/last and OUT/best (the EMA model in the inference format: imagefolder reconstruct --tokenizer OUT/last),
OUT/log.txt, OUT/metrics.jsonl and TensorBoard logs in OUT/tb. Any config key can be overridden as --key value
(e.g. --lr 1e-4 --codebook-size 8192 --disc-type none).
"""
from __future__ import annotations

import argparse

from ._training import add_training_args, collect_overrides, run_training


def add_parser(sub) -> None:
    p = sub.add_parser("train-tokenizer", help="train the tokenizer (YAML config, torchrun-ready, resumable)",
                       description=__doc__.replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(p, "tokenizer training")
    p.set_defaults(run=run, accepts_overrides=True)


def run(args) -> int:
    from ..train.options import TOKENIZER_ACCEPTED_ONLY, TokenizerTrainOptions, load_options
    from ..train.tokenizer_trainer import TokenizerTrainer
    opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, args.config,
                               collect_overrides(args, args.overrides))
    return run_training(TokenizerTrainer, opts, model, args)
