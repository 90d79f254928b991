"""``imagefolder train-generator``: train the class-conditional VAR generator on a trained tokenizer's codes, from a
YAML config (the VAR recipe's keys), on one process or under ``torchrun --nproc_per_node=N``.

The tokenizer (--tokenizer: a train-tokenizer output such as OUT/best, an official tokenizer .pt or VAR's VQVAE)
stays frozen and decides the token layout; num_classes defaults to the number of class folders of the training
data. --var-ckpt fine-tunes a trained generator instead of starting from random weights (VAR's release included).
Images are tokenized on the fly, or read from a cache written once by 'imagefolder pretokenize' (--codes-cache).

Writes OUT/checkpoints/step-*.pt (full training state, atomic; --resume auto continues from the newest),
OUT/last and OUT/best (the EMA generator with its tokenizer: imagefolder sample --generator OUT/last),
OUT/log.txt, OUT/metrics.jsonl and TensorBoard logs in OUT/tb (losses, per-scale validation accuracy, sample
grids). Any config key can be overridden as --key value (e.g. --depth 16 --global-batch-size 768 --tblr 8e-5).
"""
from __future__ import annotations

import argparse

from ..hub import SPEC_HELP
from ._training import add_training_args, collect_overrides, run_training


def add_parser(sub) -> None:
    p = sub.add_parser("train-generator", help="train the VAR generator on a tokenizer's codes (YAML config, "
                       "torchrun-ready, resumable)", description=__doc__.replace("``", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(p, "generator training")
    p.add_argument("--tokenizer", metavar="CKPT",
                   help="the trained tokenizer (overrides the config's tokenizer)" + SPEC_HELP)
    p.add_argument("--var-ckpt", metavar="CKPT",
                   help="start from (fine-tune) this generator: VAR's release (var_d16.pth ... var_d30.pth, with "
                        "--tokenizer its VQVAE vae_ch160v4096z32.pth), an official ImageFolder VAR .pt, or one of our "
                        "generator directories (which carry their tokenizer: leave --tokenizer out). Its architecture "
                        "and num_classes are kept; class folder i trains label i" + SPEC_HELP)
    p.add_argument("--codes-cache", metavar="FILE", help="codes written by imagefolder pretokenize with the same "
                   "tokenizer (overrides the config's codes_cache; default: tokenize the images on the fly)")
    p.set_defaults(run=run, accepts_overrides=True)


def run(args) -> int:
    from ..train.generator_trainer import GeneratorTrainer
    from ..train.options import GENERATOR_ACCEPTED_ONLY, GeneratorTrainOptions, load_options
    overrides = collect_overrides(args, args.overrides)
    for key in ("tokenizer", "var_ckpt", "codes_cache"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    opts, model = load_options(GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY, args.config, overrides)
    return run_training(GeneratorTrainer, opts, model, args)
