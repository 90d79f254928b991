"""VAR's release, sampled with VAR's demo settings and its VQVAE's reconstructions: ours, and optionally VAR's own
code, on the same weights.

Builds VAR d16 + its VQVAE (presets ``var-d16`` / ``var-vqvae``, random weights, nothing downloaded) and times
``Generator.generate`` with VAR's demo settings (cfg 4 on a linear ramp, top-k 900, top-p 0.95, more_smooth off;
decode to pixels included) in fp32 and under bf16 autocast, at each batch size.

With ``--official PATH`` (a local checkout of FoundationVision/VAR; it is imported from there at run time and is
never copied into this repository) it also builds VAR's own ``VQVAE`` and ``VAR`` modules, loads into them our
weights exported in VAR's release format (the state dicts ``imagefolder convert`` writes as ``var_d16.pth`` and
``vae_ch160v4096z32.pth``, loaded with ``strict=True``), checks that VAR's sampler and ours agree on them (fed the
codes VAR's sampler drew, our guided logits at every scale and our decoded image match its own), and times its
``autoregressive_infer_cfg`` under the same settings in the same process (bf16: under
``torch.autocast``, as VAR's demo runs it under autocast). Ratios are VAR's time / ours.

The two samplers draw differently (VAR: one generator for the batch; ours: one stream per image), so the codes
differ for the same seed; the time depends on the draws only through the top-p nucleus sizes.

Reconstruction (``--parts reconstruction``, on by default): random 256 px pictures through the VQVAE (encode,
quantize at every scale, decode), ``Tokenizer.reconstruct`` against VAR's ``VQVAE.img_to_reconstructed_img(x,
last_one=True)``, fp32 and bf16 (ours under ``Tokenizer.precision``, VAR's under ``torch.autocast``, its latent cast
to float32 before its quantizer, as its training forward does: without it VAR's code fails under CPU autocast); the
fp32 pictures of the two are compared first.

On a GPU (``--device``, auto picks one when torch sees it) both run there.

Peak memory: in one process both samplers' memory adds up, so ``--alone`` runs each sampler in a process of its own
(the weights go through a temporary file, so neither process ever held the other's model) and reports its time and
the peak resident size while sampling (Linux: the peak is reset after the model is built), beside the resident size
of the built model.

Usage: python benchmarks/bench_var_sampling.py [--official ../VAR] [--batch-sizes 1 8] [--repeats 2] [--device auto]
       python benchmarks/bench_var_sampling.py --official ../VAR --alone --batch-sizes 8 --keep-freed-memory
       python benchmarks/bench_var_sampling.py --preset var-tiny --repeats 1 --official ../VAR   # seconds
       python benchmarks/bench_var_sampling.py --official ../VAR --parts sampling --dtypes bf16 --compile
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
import torch.nn as nn

import imagefolder as imf
from imagefolder import var_release
from imagefolder.official import to_official_state_dict
from _timing import best_of, machine, peak_memory, pick_device, reset_peak_rss, status_mb

CFG, TOP_K, TOP_P, MORE_SMOOTH = 4.0, 900, 0.95, False
DEMO_CLASSES = (207, 360, 387, 974, 88, 979, 417, 279)  # the classes of VAR's demo_sample.ipynb
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def labels_for(B: int, num_classes: int) -> torch.Tensor:
    return torch.tensor([DEMO_CLASSES[i % len(DEMO_CLASSES)] % num_classes for i in range(B)])


# VAR's own code ---------------------------------------------------------------------------------------------------
def import_official(path: Path):
    """VAR's ``models`` package from a checkout (it imports VAR's top-level ``dist`` module, numpy and
    huggingface_hub; flash-attn / xformers are optional there)."""
    if not (path / "models" / "var.py").is_file() or not (path / "dist.py").is_file():
        sys.exit(f"--official {path}: not a FoundationVision/VAR checkout (no models/var.py and dist.py)")
    sys.path.insert(0, str(path.resolve()))
    try:
        import models as var_models
        import models.var
    except ImportError as e:
        sys.exit(f"--official {path}: VAR's code does not import here ({e}); it needs numpy and huggingface_hub")
    if not Path(var_models.__file__).resolve().is_relative_to(path.resolve()):
        sys.exit(f"--official {path}: 'import models' found {var_models.__file__}, not VAR's")
    return var_models


@contextlib.contextmanager
def no_default_init():
    """Skip the layers' own random init while building VAR's modules (every weight is loaded afterwards), as
    VAR's ``build_vae_var`` does, but restore it afterwards (that function leaves it patched for the process)."""
    classes = (nn.Linear, nn.LayerNorm, nn.Conv2d, nn.Embedding)
    saved = {c: c.__dict__.get("reset_parameters") for c in classes}  # None: inherited (Conv2d's is _ConvNd's)
    for c in classes:
        c.reset_parameters = lambda self: None
    try:
        yield
    finally:
        for c, fn in saved.items():
            if fn is None:
                del c.reset_parameters
            else:
                c.reset_parameters = fn


def build_official(var_models, gen: imf.Generator, device: torch.device, states: dict | None = None):
    """VAR's VQVAE + VAR with ``gen``'s weights, from our release-format export, loaded strictly (``states``: that
    export made earlier, keys "var" and "vqvae", when ``gen`` holds no values)."""
    c, t = gen.config, gen.tokenizer.config
    if tuple(t.encoder_ch_mult) != (1, 1, 2, 2, 4):
        sys.exit("VAR's VQVAE has ch_mult 1,1,2,2,4; this preset's tokenizer differs")
    with no_default_init(), contextlib.redirect_stdout(None):  # VAR's constructor prints its configuration
        vae = var_models.VQVAE(vocab_size=t.codebook_size, z_channels=t.codebook_embed_dim, ch=t.ch,
                               quant_conv_ks=t.quant_conv_ks, quant_resi=t.quant_resi,
                               share_quant_resi=t.share_quant_resi, v_patch_nums=tuple(t.v_patch_nums),
                               test_mode=True)
        var = var_models.VAR(vae_local=vae, num_classes=c.num_classes, depth=c.depth, embed_dim=c.embed_dim,
                             num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, drop_rate=0.0, attn_drop_rate=0.0,
                             drop_path_rate=0.0, norm_eps=c.norm_eps, shared_aln=False, cond_drop_rate=0.0,
                             attn_l2_norm=c.attn_l2_norm, patch_nums=tuple(t.v_patch_nums),
                             flash_if_available=False, fused_if_available=False)
    # the state dicts imf.export_var_release / `imagefolder convert` write to var_dNN.pth and vae_*.pth
    vae.load_state_dict(states["vqvae"] if states else var_release.vqvae_state(gen.tokenizer), strict=True)
    var.load_state_dict(states["var"] if states else to_official_state_dict(gen), strict=True)
    var.rng = torch.Generator(device=device)  # VAR makes it on dist.get_device(), which is CUDA when one exists
    return vae.to(device).eval(), var.to(device).eval()


def official_sampler(var, labels: torch.Tensor, top_k: int, dtype: torch.dtype):
    def run():
        with torch.autocast(labels.device.type, dtype=dtype, enabled=dtype != torch.float32):
            return var.autoregressive_infer_cfg(B=labels.shape[0], label_B=labels, g_seed=0, cfg=CFG, top_k=top_k,
                                                top_p=TOP_P, more_smooth=MORE_SMOOTH)
    return run


def reconstruction(vae, gen: imf.Generator, batch_sizes, dtypes, repeats: int, device: torch.device) -> None:
    """Time the VQVAE's reconstruction of random pictures: ours and (``vae`` not None) VAR's, per batch size and
    precision; with VAR's, first the largest fp32 difference of the two reconstructions."""
    tok = gen.tokenizer
    size = tok.config.image_size
    pictures = lambda B: torch.rand(B, 3, size, size, generator=torch.Generator().manual_seed(B)).mul(2).sub(1)

    def ours(x, dtype):
        def run():
            with torch.no_grad(), tok.precision(dtype):
                return tok.reconstruct(x)
        return run

    def theirs(x, dtype):
        def run():  # VAR's img_to_reconstructed_img(x, last_one=True), step by step
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                f = vae.quant_conv(vae.encoder(x))
                # under CPU autocast f is bf16, and VAR's quantizer then fails (addmm_ of a bf16 residual with its
                # fp32 codebook); its training forward casts f to float32 first, and so does this
                f_hat = vae.quantize.f_to_idxBl_or_fhat(f.float(), to_fhat=True)[-1]
                return vae.decoder(vae.post_quant_conv(f_hat)).clamp_(-1, 1)
        return run

    if vae is not None:
        x = pictures(2).to(device)
        diff = (ours(x, torch.float32)().double() - theirs(x, torch.float32)().double()).abs().max().item()
        print(f"reconstruction agreement, fp32, batch 2: max |diff| {diff:.2e}")
    for B in batch_sizes:
        x = pictures(B).to(device)
        parts, times = [], {}
        for name in dtypes:
            times[name] = t_ours = best_of(ours(x, DTYPES[name]), repeats, device=device)
            if vae is not None:
                t_var = best_of(theirs(x, DTYPES[name]), repeats, device=device)
                parts.append(f"{name}: VAR {t_var:6.2f} s, ours {t_ours:6.2f} s (x{t_var / t_ours:.2f})")
            else:
                parts.append(f"{name}: ours {t_ours:6.2f} s")
        if "fp32" in times and "bf16" in times:
            parts.append(f"ours bf16 vs fp32 x{times['fp32'] / times['bf16']:.2f}")
        print(f"reconstruct batch {B:2d}: " + " | ".join(parts))


def agreement(var, gen: imf.Generator, labels: torch.Tensor, top_k: int) -> tuple[float, float]:
    """Run VAR's fp32 sampler recording the guided logits it saw and the codes it drew; feed those codes to ours.
    Returns the largest differences of the guided logits (over all scales) and of the images."""
    import models.var as var_module

    seen, drawn = [], []
    original = var_module.sample_with_top_k_top_p_

    def recording(logits_BlV, **kw):
        seen.append(logits_BlV.clone())
        idx = original(logits_BlV, **kw)
        drawn.append(idx[:, :, 0].clone())
        return idx

    var_module.sample_with_top_k_top_p_ = recording
    try:
        theirs_img = official_sampler(var, labels, top_k, torch.float32)()
    finally:
        var_module.sample_with_top_k_top_p_ = original
    if len(seen) != len(gen.patch_nums):
        sys.exit(f"recorded {len(seen)} scales of VAR's sampler, expected {len(gen.patch_nums)}")
    ours_logits = gen.guided_logits(labels, [drawn], cfg=CFG)[0]
    d_logits = max((a.double() - b.double()).abs().max().item() for a, b in zip(ours_logits, seen))
    with torch.no_grad():
        ours_img = gen.tokenizer.decode([drawn]).add(1).mul(0.5)
    return d_logits, (ours_img.double() - theirs_img.double()).abs().max().item()


# --alone: each sampler in its own process ---------------------------------------------------------------------------
def run_alone_child(args) -> None:
    """One sampler (``args.child``) on the weights in ``args.weights``; prints one line per setting."""
    import gc
    states = torch.load(args.weights, weights_only=True, mmap=True)  # file pages, dropped again with `states`
    with torch.device("meta"):
        shape = imf.load_generator(args.preset)
    if args.child == "official":
        _, var = build_official(import_official(args.official), shape, torch.device("cpu"), states)
        sampler = lambda labels, dtype: official_sampler(var, labels, min(TOP_K, shape.V), dtype)
    else:
        gen = shape.to_empty(device="cpu")
        gen.load_state_dict(states["ours"], strict=True)
        gen.tokenizer.load_state_dict(states["tokenizer"], strict=True)
        gen.eval()
        sampler = lambda labels, dtype: (lambda: gen.generate(labels, cfg=CFG, top_k=min(TOP_K, gen.V), top_p=TOP_P,
                                                              seed=0, dtype=dtype, more_smooth=MORE_SMOOTH))
    del states
    gc.collect()
    for B in args.batch_sizes:
        labels = labels_for(B, shape.num_classes)
        for name in args.dtypes:
            resident = status_mb("VmRSS")
            reset = reset_peak_rss()
            t = best_of(sampler(labels, DTYPES[name]), args.repeats)
            peak = f"{status_mb('VmHWM')} MB" if reset else "n/a"
            print(f"ALONE {args.child} batch {B} {name}: {t:.2f} s, resident before {resident} MB, peak {peak}",
                  flush=True)


def run_alone(args) -> None:
    """Export the weights once, then time each sampler in a fresh process of its own."""
    import subprocess
    import tempfile
    torch.manual_seed(0)
    gen = imf.load_generator(args.preset).eval()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.pt"
        torch.save({"ours": gen.state_dict(), "tokenizer": gen.tokenizer.state_dict(),
                    "var": to_official_state_dict(gen), "vqvae": var_release.vqvae_state(gen.tokenizer)}, weights)
        del gen
        which = ["ours"] + (["official"] if args.official is not None else [])
        for child in which:
            cmd = [sys.executable, __file__, "--child", child, "--weights", str(weights), "--preset", args.preset,
                   "--repeats", str(args.repeats), "--batch-sizes", *map(str, args.batch_sizes),
                   "--dtypes", *args.dtypes]
            if args.official is not None:
                cmd += ["--official", str(args.official)]
            if args.keep_freed_memory:
                cmd.append("--keep-freed-memory")
            out = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line[len("ALONE "):] for line in out.stdout.splitlines() if line.startswith("ALONE ")]
            if out.returncode != 0:
                sys.exit(f"the {child} process failed:\n{out.stderr[-2000:]}")
            print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="var-d16", help="generator preset (var-d16 ... var-d30; var-tiny to try the "
                    "script in seconds)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes to time")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per setting (the best is reported)")
    ap.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES), help="precisions to time")
    ap.add_argument("--compile", action="store_true",
                    help="also time our sampler with generate(compile=True) (its first call, which compiles, apart)")
    ap.add_argument("--parts", nargs="+", choices=("sampling", "reconstruction"),
                    default=["sampling", "reconstruction"],
                    help="what to time (without --alone): sampling (decoding included) and the VQVAE's reconstruction")
    ap.add_argument("--official", type=Path, default=None,
                    help="a local checkout of FoundationVision/VAR: also time its own sampler on the same weights")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where to time: auto = the GPU when torch sees one, else the CPU")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="tune the C library's malloc first as the imagefolder command does (imagefolder.allocator); "
                         "it acts on the whole process, so on both samplers")
    ap.add_argument("--alone", action="store_true",
                    help="time ours (and VAR's, with --official) each in a process of its own on the CPU, with each "
                         "one's peak resident memory while sampling")
    ap.add_argument("--child", choices=("ours", "official"), help=argparse.SUPPRESS)  # --alone's worker processes
    ap.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.keep_freed_memory:
        from imagefolder.allocator import keep_freed_memory
        applied = keep_freed_memory()
        if args.child is None:
            print(f"malloc: freed memory kept in the heap ({'applied' if applied else 'not available here'})")
    if args.child is not None:
        return run_alone_child(args)
    if args.alone:
        return run_alone(args)

    device = pick_device(args.device)
    var_models = import_official(args.official) if args.official is not None else None
    torch.manual_seed(0)
    gen = imf.load_generator(args.preset).to(device).eval()
    top_k = min(TOP_K, gen.V)  # VAR's topk fails on k > V (only a tiny preset has V < 900)
    print(f"machine: {machine(device)}")
    own = sum(p.numel() for n, p in gen.named_parameters() if not n.startswith("tokenizer.")) / 1e6
    tok = sum(p.numel() for p in gen.tokenizer.parameters()) / 1e6
    print(f"generator {args.preset}: {own:.1f} M parameters + VQVAE {tok:.1f} M, {gen.L} tokens, V {gen.V}; "
          f"cfg {CFG:g}, top-k {top_k}, top-p {TOP_P}, more_smooth {MORE_SMOOTH}; decode included")
    vae = var = None
    if var_models is not None:
        vae, var = build_official(var_models, gen, device)
        print(f"official: VAR's models/ from {args.official}, our weights loaded strictly in its release format")
        d_logits, d_img = agreement(var, gen, labels_for(2, gen.num_classes).to(device), top_k)
        print(f"agreement, fp32, batch 2, fed the codes VAR's sampler drew: guided logits max |diff| {d_logits:.2e} "
              f"over all scales, decoded image max |diff| {d_img:.2e}")

    for B in args.batch_sizes if "sampling" in args.parts else ():
        labels = labels_for(B, gen.num_classes).to(device)
        parts = []
        times = {}
        for name in args.dtypes:
            dtype = DTYPES[name]
            ours = lambda compile=False: gen.generate(labels, cfg=CFG, top_k=top_k, top_p=TOP_P, seed=0, dtype=dtype,
                                                      more_smooth=MORE_SMOOTH, compile=compile)
            t_ours = best_of(ours, args.repeats, device=device)
            times[name] = t_ours
            t_var = best_of(official_sampler(var, labels, top_k, dtype), args.repeats, device=device) \
                if var is not None else None
            if t_var is not None:
                parts.append(f"{name}: VAR {t_var:6.2f} s, ours {t_ours:6.2f} s (x{t_var / t_ours:.2f}; "
                             f"{t_ours / B:.2f} s/img)")
            else:
                parts.append(f"{name}: ours {t_ours:6.2f} s ({t_ours / B:.2f} s/img)")
            if args.compile:
                first = best_of(lambda: ours(True), 1, warmup=0, device=device)  # compiles this batch size
                t_comp = best_of(lambda: ours(True), args.repeats, warmup=0, device=device)
                ratio = f"x{t_var / t_comp:.2f}; " if t_var is not None else ""
                parts.append(f"{name} compiled: ours {t_comp:6.2f} s ({ratio}first call {first:.0f} s)")
        if "fp32" in times and "bf16" in times:
            parts.append(f"ours bf16 vs fp32 x{times['fp32'] / times['bf16']:.2f}")
        print(f"batch {B:2d}: " + " | ".join(parts))
    if "reconstruction" in args.parts:
        reconstruction(vae, gen, args.batch_sizes, args.dtypes, args.repeats, device)
    print(peak_memory(device))


if __name__ == "__main__":
    main()
