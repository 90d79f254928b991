"""Full-size tokenizer reconstruction speed (imagefolder-4096, 256 px, random weights) on the CPU, or a GPU.

Prints wall time per batch for fp32 (exact), plain bf16 autocast, and ``Tokenizer.precision(torch.bfloat16)``
(autocast with the cast weights kept between calls) at batch 1 and 8, with ratios against the fp32 run measured
in the same process.  Usage: python benchmarks/bench_reconstruct.py [--batch-sizes 1 8] [--repeats 3] [--device auto]
"""
from __future__ import annotations

import argparse

import torch

import imagefolder as imf
from _timing import best_of, machine, peak_memory, pick_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="imagefolder-4096", help="tokenizer preset to time")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes to time")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per setting (the best is reported)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where to time: auto = the GPU when torch sees one, else the CPU")
    args = ap.parse_args()

    device = pick_device(args.device)
    torch.manual_seed(0)
    tok = imf.load_tokenizer(args.preset).to(device)
    size = tok.config.image_size
    print(f"machine: {machine(device)}")
    print(f"tokenizer {args.preset}: {sum(p.numel() for p in tok.parameters()) / 1e6:.1f} M parameters")
    for B in args.batch_sizes:
        x = torch.rand(B, 3, size, size, device=device) * 2 - 1
        fp32 = best_of(lambda: tok.reconstruct(x), args.repeats, device=device)

        def autocast():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                tok.reconstruct(x)

        def cached():
            with tok.precision(torch.bfloat16):
                tok.reconstruct(x)
        t_auto = best_of(autocast, args.repeats, device=device)
        t_cached = best_of(cached, args.repeats, device=device)
        print(f"batch {B:2d}: fp32 {fp32:6.3f} s ({fp32 / B:.3f} s/img) | bf16 autocast {t_auto:6.3f} s "
              f"(x{fp32 / t_auto:.2f}) | bf16 cached weights {t_cached:6.3f} s ({t_cached / B:.3f} s/img, "
              f"x{fp32 / t_cached:.2f})")
    print(peak_memory(device))


if __name__ == "__main__":
    main()
