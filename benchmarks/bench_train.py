"""Training throughput (images/s) of the tiny CPU recipes, fp32 (baseline) vs bf16 autocast, measured in one run.

    python benchmarks/bench_train.py [--steps 30] [--threads 2]

Uses configs/tiny-tokenizer.yaml and configs/tiny-generator.yaml on a freshly made 32 px shapes set; the
generator trains on the codes of the tokenizer trained in the same run (on the fly, as without a codes cache).
Each measurement is steps / time after one warm-up step (the first step builds caches).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _timing import machine

from imagefolder.data.make_dataset import make_dataset
from imagefolder.distributed import DistInfo
from imagefolder.train.generator_trainer import GeneratorTrainer
from imagefolder.train.options import (GENERATOR_ACCEPTED_ONLY, TOKENIZER_ACCEPTED_ONLY, GeneratorTrainOptions,
                                       TokenizerTrainOptions, load_options)
from imagefolder.train.tokenizer_trainer import TokenizerTrainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def images_per_s(trainer_cls, opts_cls, accepted, config, over, out) -> float:
    """Images/s of optimizer steps 2..N (step 1 is a warm-up), read from the run's log timing."""
    opts, model = load_options(opts_cls, accepted, config, {**over, "max_steps": 1})
    t = trainer_cls(opts, model, out, CPU, show_progress=False)
    t.fit()  # warm-up run (builds the model, first step)
    opts, model = load_options(opts_cls, accepted, config, over)
    t = trainer_cls(opts, model, out / "timed", CPU, show_progress=False)
    t0 = time.perf_counter()
    summary = t.fit()
    return summary["images_per_s"], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="timed optimizer steps per measurement")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_dataset("shapes", tmp / "data", size=32, train_per_class=100, val_per_class=5, seed=0)
        common = {"data_path": str(tmp / "data" / "train"), "val_data_path": None, "val_every": 0,
                  "max_steps": args.steps, "tensorboard": False, "log_every": 1000}
        rows = []
        for mp in ("none", "bf16"):
            ips, _ = images_per_s(TokenizerTrainer, TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY,
                                  CONFIGS / "tiny-tokenizer.yaml", {**common, "mixed_precision": mp},
                                  tmp / f"tok-{mp}")
            rows.append(("tokenizer (tiny-tokenizer.yaml)", mp, ips))
        tok = tmp / "tok-none" / "timed" / "last"
        for mp in ("none", "bf16"):
            ips, _ = images_per_s(GeneratorTrainer, GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY,
                                  CONFIGS / "tiny-generator.yaml",
                                  {**common, "tokenizer": str(tok), "mixed_precision": mp, "val_samples": 0},
                                  tmp / f"gen-{mp}")
            rows.append(("generator (tiny-generator.yaml, codes on the fly)", mp, ips))
    print(f"{'recipe':52s} {'precision':>9s} {'images/s':>9s} {'vs fp32':>8s}")
    base = {}
    for name, mp, ips in rows:
        base.setdefault(name, ips)
        print(f"{name:52s} {('fp32' if mp == 'none' else mp):>9s} {ips:9.1f} {ips / base[name]:7.2f}x")


if __name__ == "__main__":
    main()
