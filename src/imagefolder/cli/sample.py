"""``imagefolder sample``: class-conditional samples as PNG files, a grid and an optional ADM-style ``.npz``.

The job is the list of (index, class) pairs: the classes in the order given, ``--per-class`` samples each, index =
position in that list. Image ``index`` is generated from its own random stream seeded by (seed, index), so it does
not depend on the batch size, on which process draws it, or on a resumed run. Files:

* ``OUT/{index:06d}_class{class:04d}.png`` per sample (written atomically; existing ones are skipped, so a killed
  run continues where it stopped: rerun it with the same options);
* ``OUT/sample.json``: the settings the samples were made with; a run with other settings is refused unless
  --overwrite (which deletes the earlier samples first);
* ``OUT/grid.png``: the first 64 samples, ``--grid-cols`` per row;
* ``OUT/samples.npz`` with ``--npz``: ``arr_0`` = uint8 (N, H, W, 3) in index order (the layout the ADM evaluator
  reads) and ``labels`` = int64 (N,), assembled from the PNG files.

Under ``torchrun --nproc_per_node=N -m imagefolder.cli sample ...`` the missing images are dealt out to the
processes in turn; rank 0 writes the grid and the npz after all ranks are done. The files are the same as from
one process.
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..hub import SPEC_HELP
from . import HelpFormatter, UsageError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GRID_MAX = 64


TOKENIZER_HELP = ("the generator's tokenizer, when its file does not hold it: VAR's VQVAE (vae_ch160v4096z32.pth) "
                  "for VAR's released var_d16.pth ... var_d30.pth (required there), or, for official ImageFolder VAR "
                  "files whose args do not describe their tokenizer, a tokenizer checkpoint, directory or preset "
                  "giving its shape" + SPEC_HELP)


def add_sampling_options(p) -> None:
    """--cfg, --cfg-schedule, --top-k, --top-p, --temperature, --more-smooth with the paper's settings as defaults
    (also used by complete)."""
    p.add_argument("--cfg", type=float, default=3.25, help="classifier-free guidance strength")
    p.add_argument("--cfg-schedule", choices=("linear", "constant"), default="linear",
                   help="linear: the official ramp cfg * si / (K - 1) over scales; constant: cfg at every scale")
    p.add_argument("--top-k", type=int, default=750, help="keep the k most likely codes per branch; 0 = all")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass per branch; 0 or 1 = off")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="the guided logits are divided by it before top-k/top-p: below 1 sharper, above 1 more varied")
    p.add_argument("--more-smooth", action="store_true",
                   help="VAR's more_smooth: each scale adds a Gumbel-softmax mixture of code vectors (temperature "
                        "falling from 0.27 over the scales, on the top-k/top-p logits) instead of the drawn code's "
                        "vector; smoother pictures, for viewing (VAR's FID numbers are without it). VAR's demo "
                        "settings: --cfg 4 --top-k 900 --top-p 0.95")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sample", help="class-conditional samples from a generator: PNGs, a grid, optional .npz",
        description=__doc__.replace("``", ""), formatter_class=HelpFormatter)
    p.add_argument("--generator", required=True, metavar="CKPT",
                   help="official ImageFolder VAR .pt file, VAR's released var_d16.pth ... var_d30.pth (with "
                        "--tokenizer), one of our generator directories, or a preset name (d16, var-d16, tiny, ...; "
                        "presets have random weights, initialised from --seed)" + SPEC_HELP)
    p.add_argument("--tokenizer", metavar="SPEC", help=TOKENIZER_HELP)
    p.add_argument("--classes", metavar="LIST",
                   help="class ids in job order, e.g. '1,2,3' or '0-9,207' (give this or --all-classes)")
    p.add_argument("--all-classes", action="store_true",
                   help="every class of the generator, in order (give this or --classes)")
    p.add_argument("--per-class", type=int, default=1, metavar="N", help="samples per class")
    add_sampling_options(p)
    p.add_argument("--joint-sample", action="store_true",
                   help="draw both branches of a position from their joint (product) distribution with one random "
                        "number, as the official joint mode (otherwise one random number per branch)")
    p.add_argument("--seed", type=int, default=0, help="seed of every image's random stream")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per forward pass")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                   help="float32 is exact; bfloat16/float16 run under autocast")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: this process's GPU when there is one, else the CPU")
    p.add_argument("--compile", action="store_true",
                   help="run the transformer blocks compiled (torch.compile, one graph per scale): VAR d16 in bf16 "
                        "on a 2-core CPU 2-15%% faster in our runs, after 45-100 s of compiling at the first batch; "
                        "for long runs. Not exact (fused passes round differently, so codes can change); recorded "
                        "in sample.json")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT/sample.json records what its samples were made with (generator weights, seed, cfg, "
                        "schedule, top-k, top-p, joint sampling, dtype, temperature, compile). Samples of the same "
                        "settings are kept and only the missing ones made (a killed run continues); when the settings "
                        "differ the command refuses, unless --overwrite: then the earlier samples, grid and npz are "
                        "deleted and made again")
    p.add_argument("--npz", action="store_true", help="also write OUT/samples.npz (arr_0: uint8 NHWC, labels)")
    p.add_argument("--grid-cols", type=int, metavar="N",
                   help="images per grid row (unset: --per-class, at most 16)")
    p.set_defaults(run=run)


def parse_classes(text: str, num_classes: int) -> list[int]:
    """'1,2,5-7' -> [1, 2, 5, 6, 7]; every id must be in [0, num_classes)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise UsageError(f"--classes: cannot read {part!r}; use ids and ranges like '1,2,5-7'") from None
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad:
        raise UsageError(f"--classes: ids {bad} are outside 0..{num_classes - 1} (this generator has "
                         f"{num_classes} classes)")
    return out


def image_path(out: Path, index: int, label: int) -> Path:
    return out / f"{index:06d}_class{label:04d}.png"


def check_sampling_options(args) -> None:
    """--cfg finite and >= 0, --top-p in [0, 1], --top-k >= 0, --temperature > 0 (NaN and infinities are
    refused)."""
    if not (math.isfinite(args.cfg) and args.cfg >= 0):
        raise UsageError(f"--cfg must be a finite number >= 0, got {args.cfg}")
    if not 0.0 <= args.top_p <= 1.0:  # also refuses NaN
        raise UsageError(f"--top-p must be in [0, 1], got {args.top_p}")
    if args.top_k < 0:
        raise UsageError(f"--top-k must be at least 0, got {args.top_k}")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise UsageError(f"--temperature must be a finite number > 0, got {args.temperature}")


def _check(args) -> None:
    if (args.classes is None) == (not args.all_classes):
        raise UsageError("give exactly one of --classes LIST and --all-classes")
    for name, low in (("per_class", 1), ("batch_size", 1), ("grid_cols", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    check_sampling_options(args)


SETTINGS = "sample.json"        # OUT/sample.json: what the samples in OUT were made with
# options newer than sample.json: their defaults when not recorded
_RECORDED_WHEN_SET = {"temperature": 1.0, "compile": False}
_SAMPLE_NAME = re.compile(r"^\d{6}_class\d{4}\.png$")


def sample_settings(gen, args) -> dict:
    """What decides the pictures: the generator's weights (a fingerprint), seed and every sampling option."""
    from ..train.pretokenize import tokenizer_fingerprint
    settings = {"generator": str(args.generator), "generator_fingerprint": tokenizer_fingerprint(gen),
                "seed": args.seed, "cfg": args.cfg, "cfg_schedule": args.cfg_schedule, "top_k": args.top_k,
                "top_p": args.top_p, "joint_sample": bool(args.joint_sample), "dtype": args.dtype}
    for key, default in _RECORDED_WHEN_SET.items():  # only when set, so folders from before the option still match
        if getattr(args, key) != default:
            settings[key] = getattr(args, key)
    return settings


def _earlier_samples(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if _SAMPLE_NAME.match(p.name)] if out.is_dir() else []


def prepare_sample_folder(out: Path, settings: dict, overwrite: bool, is_main: bool) -> None:
    """Refuse to mix samples of other settings into OUT (or, with --overwrite, delete them first); record the
    settings in OUT/sample.json. Samples of the same settings are kept: a killed run continues."""
    from ..checkpoint import atomic_write
    from ..data.images import printable
    from ._outputs import check_kind
    check_kind(out, "folder", purpose="the samples")
    earlier = _earlier_samples(out)
    recorded = None
    if (out / SETTINGS).is_file():
        try:
            recorded = json.loads((out / SETTINGS).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            recorded = {"unreadable": True}
    def value(record: dict, key: str):  # settings recorded only when set (temperature) are at their default
        return record.get(key, _RECORDED_WHEN_SET.get(key))

    differ = []
    if recorded is not None:
        keys = [*settings, *(k for k in _RECORDED_WHEN_SET if k not in settings)]
        differ = [k for k in keys if k != "generator" and value(recorded, k) != value(settings, k)]
    elif earlier:
        differ = ["unknown (no " + SETTINGS + ")"]
    if differ and not overwrite:
        what = ", ".join(f"{k} {value(recorded, k)!r} -> {value(settings, k)!r}"
                         if recorded and (k in recorded or k in _RECORDED_WHEN_SET) else k
                         for k in differ if k != "generator_fingerprint")
        if "generator_fingerprint" in differ:
            what = ("the generator's weights" + (f", {what}" if what else ""))
        raise UsageError(f"--out {printable(str(out))} holds {len(earlier)} samples made with other settings "
                         f"({what}); use --overwrite to delete them and sample again, or choose another --out")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        if differ:  # --overwrite
            for p in [*earlier, out / "grid.png", out / "samples.npz"]:
                p.unlink(missing_ok=True)
        for p in out.iterdir():  # temporary files of writes a killed run left behind
            if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
                p.unlink(missing_ok=True)
        atomic_write(out / SETTINGS, lambda tmp: Path(tmp).write_text(json.dumps(settings, indent=2) + "\n"))


def run(args) -> int:
    from ..distributed import all_gather_object, barrier, init_from_env, shutdown
    from ..loading import load_generator

    _check(args)
    try:
        info = init_from_env(args.device)
    except RuntimeError as e:
        raise UsageError(str(e)) from None
    try:
        torch.manual_seed(args.seed)  # presets: the same random weights in every process
        gen = load_generator(args.generator, tokenizer=args.tokenizer).to(info.device)
        classes = list(range(gen.num_classes)) if args.all_classes else parse_classes(args.classes, gen.num_classes)
        job = [(i, c) for i, c in enumerate(c for c in classes for _ in range(args.per_class))]
        out = Path(args.out)
        prepare_sample_folder(out, sample_settings(gen, args), args.overwrite, info.is_main)
        barrier()  # OUT is ready (earlier samples of other settings deleted with --overwrite)
        missing = [(i, c) for i, c in job if not image_path(out, i, c).exists()]
        barrier()  # every process has listed the missing files before any writes one
        start = time.perf_counter()
        _generate(gen, missing[info.rank::info.world_size], out, args, show=info.is_main)
        barrier()
        seconds = time.perf_counter() - start
        made = sum(all_gather_object(len(missing[info.rank::info.world_size])))
        if info.is_main:
            _finish(job, out, args)
            rate = f", {made / seconds:.2f} images/s" if made else ""
            procs = f" by {info.world_size} processes" if info.world_size > 1 else ""
            npz = f"; arrays in {out / 'samples.npz'}" if args.npz else ""
            print(f"{len(job)} samples in {out} (grid.png{npz}); generated {made}{procs} in {seconds:.1f} s{rate}, "
                  f"{len(job) - len(missing)} already there")
        barrier()
    finally:
        shutdown()
    return 0


def _generate(gen, todo: list[tuple[int, int]], out: Path, args, show: bool) -> None:
    """Generate and write this process's share ``todo`` of (index, class) pairs."""
    from ..viz import save_png, to_pil
    bar = tqdm(total=len(todo), desc="sample", unit="img", disable=not show)
    try:
        for start in range(0, len(todo), args.batch_size):
            chunk = todo[start:start + args.batch_size]
            labels = torch.tensor([c for _, c in chunk], device=gen.pos_1LC.device)
            imgs = gen.generate(labels, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                                indices=[i for i, _ in chunk], cfg_schedule=args.cfg_schedule,
                                joint_sample=args.joint_sample, dtype=DTYPES[args.dtype],
                                more_smooth=args.more_smooth, temperature=args.temperature, compile=args.compile)
            for (i, c), img in zip(chunk, imgs):
                save_png(to_pil(img), image_path(out, i, c))
            bar.update(len(chunk))
    finally:
        bar.close()


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _finish(job: list[tuple[int, int]], out: Path, args) -> None:
    """Grid and npz from the PNG files (so they also cover images made by other processes or earlier runs)."""
    from torchvision.utils import make_grid

    from ..checkpoint import atomic_write
    from ..viz import save_png

    wanted = job if args.npz else job[:GRID_MAX]
    first = _read_rgb(image_path(out, *wanted[0]))
    arr = np.empty((len(wanted), *first.shape), dtype=np.uint8)  # filled in place: one copy of all samples
    arr[0] = first
    for k, (i, c) in enumerate(wanted[1:], start=1):
        img = _read_rgb(image_path(out, i, c))
        if img.shape != first.shape:
            raise UsageError(f"{image_path(out, i, c)} is {img.shape[1]}x{img.shape[0]} but "
                             f"{image_path(out, *wanted[0]).name} is {first.shape[1]}x{first.shape[0]}: "
                             "is OUT shared with another run?")
        arr[k] = img
    cols = args.grid_cols or min(args.per_class, 16)
    grid = make_grid(torch.from_numpy(arr[:GRID_MAX]).permute(0, 3, 1, 2), nrow=cols, padding=2, pad_value=255)
    save_png(Image.fromarray(grid.permute(1, 2, 0).numpy()), out / "grid.png")
    if args.npz:
        labels = np.array([c for _, c in job], dtype=np.int64)
        atomic_write(out / "samples.npz", lambda tmp: _savez(tmp, arr, labels))


def _savez(path: str, arr: np.ndarray, labels: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would otherwise append .npz to the temporary name
        np.savez(f, arr_0=arr, labels=labels)
