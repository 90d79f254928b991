"""Training-step throughput of the demo's generators: attention spelled out (ours) against PyTorch's fused kernel.

    python benchmarks/bench_generator_step.py [--steps 15] [--batch 32] [--threads 2]

On a CPU with autograd recording, ``models.blocks.attention`` computes softmax(q k^T + bias) v with plain
matmuls instead of ``F.scaled_dot_product_attention``, whose CPU backward (a flash kernel) is many times slower
than its forward. This script times one optimizer step (forward, cross-entropy over both branches, backward,
AdamW) of the demo's two generator recipes (``demo/recipes.py``) on synthetic codes of the demo tokenizer's shapes,
eager fp32 and compiled under bf16 autocast, with each attention, all in one process; the fused kernel is the
baseline. Compiling is timed separately (the first steps).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from _timing import machine

import imagefolder.models.generator as generator_module
from imagefolder.config import GeneratorConfig, TokenizerConfig, tokenizer_preset
from imagefolder.demo import recipes
from imagefolder.models.generator import Generator

SPELLED_OUT = generator_module.attention


def fused(q, k, v, bias, scale, dropout_p):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale, dropout_p=dropout_p)


def images_per_s(recipe: dict, compiled: bool, steps: int, batch: int) -> tuple[float, float]:
    """(images/s over ``steps`` steps, seconds of the 3 warm-up steps)."""
    torch.manual_seed(0)
    fields = TokenizerConfig.__dataclass_fields__
    tok = tokenizer_preset("cnn-small", **{**{k: v for k, v in recipes.demo_tokenizer().items() if k in fields},
                                           "semantic_guide": "none"})
    gen = Generator(GeneratorConfig(depth=recipe["depth"], embed_dim=recipe["embed_dim"],
                                    num_heads=recipe["num_heads"], num_classes=10, drop_path_rate=0.0,
                                    tokenizer=tok)).train()
    opt = torch.optim.AdamW([p for p in gen.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randn(batch, gen.L - gen.first_l, gen.Cv)
    y = torch.randint(0, 10, (batch,))
    target = torch.randint(0, gen.V, (batch * gen.L * gen.P,))
    torch._dynamo.reset()
    forward = torch.compile(gen) if compiled else gen

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=compiled):
            logits = forward(y, x)
        loss = F.cross_entropy(logits.float().reshape(-1, gen.V), target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0), warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=15, help="timed optimizer steps per measurement")
    ap.add_argument("--batch", type=int, default=32, help="pictures per step (the demo's: 32)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    print(f"batch {args.batch}, {args.steps} timed steps after 3 warm-up steps; images/s")
    for name, recipe in (("small (depth 4, width 192)", recipes.SMALL_GENERATOR),
                         ("large (depth 6, width 256)", recipes.GENERATOR)):
        for compiled in (False, True):
            mode = "compiled, bf16 autocast" if compiled else "eager, fp32"
            results = {}
            for label, fn in (("fused", fused), ("spelled out", SPELLED_OUT)):
                generator_module.attention = fn
                results[label] = images_per_s(recipe, compiled, args.steps, args.batch)
            generator_module.attention = SPELLED_OUT
            (base, warm_base), (ours, warm_ours) = results["fused"], results["spelled out"]
            print(f"{name:28s} {mode:24s} fused {base:6.1f} | spelled out {ours:6.1f} (x{ours / base:.2f})"
                  f" | warm-up {warm_base:.0f} s / {warm_ours:.0f} s", flush=True)


if __name__ == "__main__":
    main()
