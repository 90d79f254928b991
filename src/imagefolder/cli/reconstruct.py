"""``imagefolder reconstruct``: tokenize and decode images; grids, per-scale progression and PSNR/SSIM.

Output folder: ``grid.png`` (originals above reconstructions), ``progression.png`` (one row per image: the input,
then the decoding after scales 1..K), ``metrics.csv`` and ``metrics.json`` (per-image PSNR/SSIM and means) and,
with ``--save-images``, ``recon/`` (one PNG per image). ``metrics.json`` is written last, so it marks a complete
run. A non-empty output folder is refused unless ``--overwrite``, which deletes the earlier run's files (those
above; other files are kept) before the first new file is written.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..hub import SPEC_HELP
from ..checkpoint import atomic_write
from ..data import ImageError, ImageFiles, builtin_images, builtin_names, find_images, to_tensor
from ..metrics import ReconstructionQuality, to_8bit
from . import UsageError
from ._outputs import add_overwrite_option, check_output, remove_outputs

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SUMMARY_FILES = ("metrics.json", "metrics.csv", "grid.png", "progression.png")
OUTPUTS = (*SUMMARY_FILES, "recon")  # what --overwrite deletes
DEFAULT_BUILTIN = 16
METRICS_NOTE = ("per image, on 8-bit RGB in [0, 1] (the saved PNGs): PSNR in dB; SSIM with an 11x11 Gaussian "
                "window (sigma 1.5, K1 0.01, K2 0.03), mean over positions and channels (metrics.ReconstructionQuality)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the empty ones (None, False) that the help text already explains."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reconstruct", help="reconstruct images with a tokenizer: grids, per-scale progression, PSNR/SSIM",
        description="Encode images to codes and decode them again. Images are center-cropped and resized to the "
                    "tokenizer's size (ADM-style). Without --images the built-in picture set (coloured shapes, "
                    "no download) is used. Writes grid.png, progression.png, metrics.csv and metrics.json "
                    "(written last: it marks a complete run) to --out; a non-empty --out only with --overwrite.",
        formatter_class=_HelpFormatter)
    p.add_argument("--tokenizer", required=True, metavar="CKPT",
                   help="official tokenizer or VAR .pt file, VAR's released VQVAE (vae_ch160v4096z32.pth; its "
                        "scales 1-16 at 256 px), one of our checkpoint directories, or a preset name (tiny, small, "
                        "imagefolder-4096, var-vqvae, ...; presets have random weights)" + SPEC_HELP)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--images", metavar="DIR",
                        help="folder of images, searched recursively (png, jpg, webp, ...), taken in sorted order")
    source.add_argument("--builtin", type=int, metavar="N",
                        help=f"use the first N pictures of the built-in set ({DEFAULT_BUILTIN} when --images is "
                             "not given)")
    p.add_argument("--seed", type=int, default=0, help="seed of the built-in picture set")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    add_overwrite_option(p, "the results in a non-empty --out: its grid.png, progression.png, metrics.csv, "
                         "metrics.json and recon/ are deleted first; other files are kept")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per forward pass")
    p.add_argument("--limit", type=int, metavar="N", help="reconstruct at most the first N images (default: all)")
    p.add_argument("--grid", type=int, default=16, metavar="N", help="images shown in grid.png (0: no grid)")
    p.add_argument("--progression", type=int, default=4, metavar="N",
                   help="images shown in progression.png (0: no progression)")
    p.add_argument("--save-images", action="store_true", help="also write every reconstruction to recon/ as PNG")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                   help="precision of the model (bfloat16: autocast)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run (auto: cuda when available)")
    p.set_defaults(run=run)


def run(args) -> int:
    try:
        return _run(args)
    except ImageError as e:
        raise UsageError(str(e)) from None


def _check_counts(args) -> None:
    for name in ("batch_size", "limit", "builtin"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("grid", "progression"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name} must be 0 or more, got {getattr(args, name)}")


def _device(choice: str) -> torch.device:
    from ..distributed import pick_device
    try:
        return pick_device(choice)
    except RuntimeError as e:
        raise UsageError(f"--device {choice}: {e}") from None


def _inputs(args, size: int) -> tuple[list[str], Dataset | list[torch.Tensor], str]:
    """Names (relative paths), the images as a dataset of (3, size, size) in [-1, 1], and a description."""
    if args.images is not None:
        root = Path(args.images)
        paths = find_images(root)[:args.limit]
        return [p.relative_to(root).as_posix() for p in paths], ImageFiles(paths, size), str(root)
    n = args.builtin or DEFAULT_BUILTIN
    n = min(n, args.limit or n)
    images_NHW3, _ = builtin_images(n, size, args.seed)
    return builtin_names(n), [to_tensor(img) for img in images_NHW3], f"builtin (n={n}, seed={args.seed})"


def _finite(v: float) -> float | None:
    return round(v, 6) if math.isfinite(v) else None


def _write_csv(path: Path, names: list[str], quality: ReconstructionQuality) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name", "psnr", "ssim"])
            for name, p, s in zip(names, quality.psnr_N, quality.ssim_N):
                w.writerow([name, f"{p:.4f}", f"{s:.6f}"])
            w.writerow(["mean", f"{quality.psnr:.4f}", f"{quality.ssim:.6f}"])
    atomic_write(path, write)


def _write_json(path: Path, summary: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n"))


@dataclass
class _Results:
    quality: ReconstructionQuality
    originals_B3HW: torch.Tensor  # the first images, in [-1, 1], on the CPU: what the figures show
    recons_B3HW: torch.Tensor     # their reconstructions, in [-1, 1]
    seconds: float


def _reconstruct_all(tok, loader: DataLoader, dtype: torch.dtype, device: torch.device, keep: int,
                     recon_paths: list[Path] | None) -> _Results:
    """Reconstruct every batch, measure PSNR/SSIM, keep the first ``keep`` images for the figures and write each
    reconstruction to ``recon_paths`` when given."""
    from ..viz import save_png, to_pil  # torchvision: imported only when needed
    originals, recons, quality = [], [], ReconstructionQuality()
    done = 0
    start = time.perf_counter()
    with tqdm(loader, desc="reconstruct", unit="batch", disable=None) as batches:
        for x_B3HW in batches:
            x_B3HW = x_B3HW.to(device)
            with tok.precision(dtype):
                y_B3HW = tok.reconstruct(x_B3HW)
            x01, y01 = to_8bit(x_B3HW).cpu(), to_8bit(y_B3HW).cpu()
            quality.add_8bit(y01, x01)
            if recon_paths is not None:
                for path, img in zip(recon_paths[done:], y_B3HW):
                    save_png(to_pil(img), path)
            originals.append(x_B3HW[:max(0, keep - done)].cpu())
            recons.append(y_B3HW[:max(0, keep - done)].float().cpu())
            done += len(x_B3HW)
    return _Results(quality, torch.cat(originals), torch.cat(recons),
                    time.perf_counter() - start)


def _recon_paths(out: Path, names: list[str]) -> list[Path]:
    """``recon/<name>`` with a .png suffix (the full name plus .png when that would make two names equal)."""
    stems = [Path(n).with_suffix(".png").as_posix() for n in names]
    if len(set(stems)) < len(stems):  # a.jpg and a.png in one folder
        stems = [f"{n}.png" for n in names]
    return [out / "recon" / s for s in stems]


def _run(args) -> int:
    from ..loading import load_tokenizer
    from ..viz import comparison_grid, progression_grid, save_png

    _check_counts(args)
    out = check_output(args.out, args.overwrite, kind="folder", purpose="the results")
    device, dtype = _device(args.device), DTYPES[args.dtype]
    tok = load_tokenizer(args.tokenizer).to(device)
    size = tok.config.image_size
    names, dataset, source = _inputs(args, size)
    out.mkdir(parents=True, exist_ok=True)
    remove_outputs(out, OUTPUTS)  # --overwrite: no result of the earlier run stays beside the new ones

    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    res = _reconstruct_all(tok, loader, dtype, device, keep=max(args.grid, args.progression),
                           recon_paths=_recon_paths(out, names) if args.save_images else None)
    if args.grid:
        save_png(comparison_grid(res.originals_B3HW[:args.grid], res.recons_B3HW[:args.grid]),
                 out / "grid.png")
    if args.progression:
        x_P3HW = res.originals_B3HW[:args.progression].to(device)
        with tok.precision(dtype):
            steps = tok.reconstruct_per_scale(x_P3HW)
        labels = ["input"] + [str(k) for k in range(1, len(steps) + 1)]
        save_png(progression_grid(x_P3HW, list(steps), labels),
                 out / "progression.png")
    _write_csv(out / "metrics.csv", names, res.quality)
    mean_psnr, mean_ssim = res.quality.psnr, res.quality.ssim
    _write_json(out / "metrics.json", {
        "tokenizer": str(args.tokenizer), "source": source, "count": len(names), "image_size": size,
        "v_patch_nums": list(tok.v_patch_nums), "dtype": args.dtype, "device": str(device),
        "seconds": round(res.seconds, 3), "metrics": METRICS_NOTE,
        "mean_psnr": _finite(mean_psnr), "mean_ssim": _finite(mean_ssim),
        "images": [{"name": n, "psnr": _finite(p), "ssim": _finite(s)}
                   for n, p, s in zip(names, res.quality.psnr_N, res.quality.ssim_N)],
    })
    print(f"reconstructed {len(names)} images ({size} px, {args.dtype}, {device}) in {res.seconds:.2f} s "
          f"({len(names) / res.seconds:.1f} images/s): PSNR {mean_psnr:.2f} dB, SSIM {mean_ssim:.4f} -> {out}")
    return 0
