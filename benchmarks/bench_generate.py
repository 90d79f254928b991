"""Full-size generation speed on the CPU, or a GPU: depth-16 VAR + imagefolder-4096 tokenizer (random weights),
cfg 3.25, top-k 750, top-p 0.95, decode included.

Baseline measured in the same run: a naive sampler without KV cache that re-runs the transformer over every token
generated so far at each scale (block-causal mask), picking from the same per-image random streams, so it must
produce the same codes; the script checks that it does. Then our KV-cached sampler in fp32 (exact) and under
bf16 autocast. Usage: python benchmarks/bench_generate.py [--batch-sizes 1 8] [--repeats 2] [--preset d16]
[--device auto]
"""
from __future__ import annotations

import argparse

import torch

import imagefolder as imf
from imagefolder.models.sampling import PerImageRNG, cfg_weight, sample_branches
from _timing import best_of, machine, peak_memory, pick_device

CFG, TOP_K, TOP_P = 3.25, 750, 0.95


@torch.no_grad()
def naive_generate(gen: imf.Generator, labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, list]:
    B, K = labels.shape[0], len(gen.patch_nums)
    cond = gen.class_emb(torch.cat((labels, torch.full_like(labels, gen.num_classes))))
    lvl_pos = gen.lvl_embed(gen.lvl_1L) + gen.pos_1LC
    inputs = [cond.unsqueeze(1).expand(2 * B, gen.first_l, -1) + gen.pos_start + lvl_pos[:, :gen.first_l]]
    mask = gen.attn_bias_for_masking
    rng = PerImageRNG(seed, range(B))
    codes = [[] for _ in range(gen.P)]
    f_hat, start = None, 0
    for si, pn in enumerate(gen.patch_nums):
        x = torch.cat(inputs, dim=1)
        end = x.shape[1]
        for b in gen.blocks:
            x = b(x, b.modulation(cond), mask[..., :end, :end])
        logits = gen.head(gen.head_nm(x[:, start:end], cond))
        t = cfg_weight(CFG, si, K)
        guided = (1 + t) * logits[:B] - t * logits[B:]
        u = rng.uniform(gen.P, pn * pn, device=labels.device)
        idx = sample_branches(list(guided.chunk(gen.P, dim=-1)), u, top_k=TOP_K, top_p=TOP_P)
        for p in range(gen.P):
            codes[p].append(idx[p])
        h = gen.tokenizer.scale_contribution(si, idx)
        f_hat = h if f_hat is None else f_hat + h
        if si < K - 1:
            nxt = gen.patch_nums[si + 1]
            down = torch.nn.functional.interpolate(f_hat, size=(nxt, nxt), mode="area")
            emb = gen.word_embed(down.flatten(2).transpose(1, 2)) + lvl_pos[:, end:end + nxt * nxt]
            inputs.append(emb.repeat(2, 1, 1))
        start = end
    return gen.tokenizer.fhat_to_img(f_hat), codes  # [-1, 1], as generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="d16", help="generator preset to time")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes to time")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per setting (the best is reported)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where to time: auto = the GPU when torch sees one, else the CPU")
    args = ap.parse_args()

    device = pick_device(args.device)
    torch.manual_seed(0)
    gen = imf.load_generator(args.preset).to(device)
    print(f"machine: {machine(device)}")
    own = sum(p.numel() for n, p in gen.named_parameters() if not n.startswith("tokenizer.")) / 1e6
    print(f"generator {args.preset}: {own:.1f} M parameters (+ tokenizer); cfg {CFG}, top-k {TOP_K}, top-p {TOP_P}")
    for B in args.batch_sizes:
        labels = (torch.arange(B) % gen.num_classes).to(device)

        def ours(dtype):
            return lambda: gen.generate(labels, cfg=CFG, top_k=TOP_K, top_p=TOP_P, seed=0, dtype=dtype)
        _, cached_codes = gen.generate(labels, cfg=CFG, top_k=TOP_K, top_p=TOP_P, seed=0, return_codes=True)
        _, naive_codes = naive_generate(gen, labels, seed=0)
        same = all(torch.equal(a, b) for pa, pb in zip(cached_codes, naive_codes) for a, b in zip(pa, pb))
        t_naive = best_of(lambda: naive_generate(gen, labels, seed=0), args.repeats, device=device)
        t_fp32 = best_of(ours(torch.float32), args.repeats, device=device)
        t_bf16 = best_of(ours(torch.bfloat16), args.repeats, device=device)
        print(f"batch {B:2d}: naive uncached fp32 {t_naive:6.2f} s | KV-cached fp32 {t_fp32:6.2f} s "
              f"(x{t_naive / t_fp32:.2f}) | KV-cached bf16 {t_bf16:6.2f} s (x{t_naive / t_bf16:.2f}) | "
              f"per image: fp32 {t_fp32 / B:.2f} s, bf16 {t_bf16 / B:.2f} s | naive codes == cached codes: {same}")
    print(peak_memory(device))


if __name__ == "__main__":
    main()
