"""``imagefolder complete``: the generator completes given pictures from their first scales.

Each picture is centre-cropped to the tokenizer's size and tokenized. The codes of its first --keep-scales scales
are kept, and the generator samples the later scales for the class given with --classes, --num times with
different random streams. Few kept scales keep the layout and colours and redraw the rest; a class other than the
picture's own edits it toward that class at the kept layout (zero-shot class editing, along scales instead of
regions). It also shows where a generator goes wrong: if completions from k real scales are already off, the
generator fails at the scales after k.

With --mask the picture is edited by region instead (in-painting, out-painting, class edits that keep the
background): the mask is a picture of the region to keep, white = keep, black = redraw. At every scale a token
position keeps the picture's codes when at least half of the area it covers is white (area downsampling, then a
0.5 threshold; grey counts partly), and the rest is sampled given them. --keep-scales then defaults to 0; scales it
keeps stay whole.

Writes OUT (a PNG): one row per picture with the picture, its reconstruction (every scale kept), then the
completions. Image i of completion column j uses the random stream (seed, j * pictures + i).
"""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from ..hub import SPEC_HELP
from . import HelpFormatter, UsageError
from ._outputs import add_overwrite_option, check_output
from .reconstruct import _device
from .sample import DTYPES, TOKENIZER_HELP, add_sampling_options, check_sampling_options, parse_classes


def add_parser(sub) -> None:
    p = sub.add_parser(
        "complete", help="complete pictures from their first scales with the generator (variations, class edits)",
        description=__doc__.replace("``", ""), formatter_class=HelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="picture files, or folders whose pictures are all taken (sorted by path)")
    p.add_argument("--generator", required=True, metavar="CKPT",
                   help="official VAR .pt file, one of our generator directories, or a preset name" + SPEC_HELP)
    p.add_argument("--tokenizer", metavar="SPEC", help=TOKENIZER_HELP)
    p.add_argument("--classes", required=True, metavar="LIST",
                   help="the class to complete each picture as: one id for all, or one per picture in order "
                        "(e.g. '3' or '1,1,7' or '0-2')")
    p.add_argument("--keep-scales", type=int, metavar="K",
                   help="scales taken from the picture (0 = plain samples, all = the reconstruction); default: "
                        "half of the generator's scales, 0 with --mask")
    p.add_argument("--mask", type=Path, metavar="PNG",
                   help="edit by region: a picture of the same size as every input picture (cropped like them), "
                        "white where the picture is kept at every scale and black where it is redrawn")
    p.add_argument("--num", type=int, default=4, metavar="N", help="completions per picture")
    add_sampling_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random streams")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="pictures per forward pass")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                   help="float32 is exact; bfloat16/float16 run the generator under autocast")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run")
    p.add_argument("--out", type=Path, default=Path("completions.png"), metavar="PNG", help="the figure to write")
    add_overwrite_option(p, "an existing --out figure")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _pictures(specs: list[str]) -> list[Path]:
    from ..data.images import find_images
    paths: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = find_images(path)
            if not found:
                raise UsageError(f"{path}: no pictures in this folder")
            paths += found
        elif path.exists():
            paths.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return paths


def load_mask(path: Path, pictures: list[Path], size: int) -> torch.Tensor:
    """The keep mask of --mask as (size, size) float in [0, 1] (white = 1), cropped like the pictures; a
    UsageError when its size differs from a picture's."""
    from PIL import Image

    from ..data.images import center_crop_arr, load_rgb, printable
    if not path.is_file():
        raise UsageError(f"--mask {printable(str(path))}: no such file")
    mask = load_rgb(path).convert("L")
    for picture in pictures:
        with Image.open(picture) as img:
            if img.size != mask.size:
                raise UsageError(f"--mask {printable(str(path))} is {mask.width}x{mask.height} but picture "
                                 f"{printable(str(picture))} is {img.width}x{img.height}: give a mask of the "
                                 "pictures' size")
    return torch.from_numpy(center_crop_arr(mask, size).astype("float32") / 255.0)


@torch.no_grad()
def run(args) -> int:
    from ..data.images import load_image
    from ..loading import load_generator
    from ..viz import progression_grid, save_png

    if args.num < 1 or args.batch_size < 1:
        raise UsageError("--num and --batch-size must be at least 1")
    check_sampling_options(args)
    check_output(args.out, args.overwrite, purpose="the figure")
    paths = _pictures(args.images)
    device = _device(args.device)
    gen = load_generator(args.generator, tokenizer=args.tokenizer).to(device)
    scales = len(gen.patch_nums)
    keep = (0 if args.mask else scales // 2) if args.keep_scales is None else args.keep_scales
    if not 0 <= keep <= scales:
        raise UsageError(f"--keep-scales must be in 0..{scales} (this generator has {scales} scales), got {keep}")
    labels = parse_classes(args.classes, gen.num_classes)
    if len(labels) == 1:
        labels = labels * len(paths)
    if len(labels) != len(paths):
        raise UsageError(f"--classes gives {len(labels)} classes for {len(paths)} pictures: give one for all or "
                         "one per picture")
    x = torch.stack([load_image(p, gen.tokenizer.config.image_size) for p in paths])
    keep_mask = None if args.mask is None else load_mask(args.mask, paths, gen.tokenizer.config.image_size)
    n = len(paths)
    pictures, recons, columns = [], [], [[] for _ in range(args.num)]
    with tqdm(total=n * args.num, desc=f"complete from {keep} scales", unit="img",
              disable=True if args.no_progress else None) as bar:
        for start in range(0, n, args.batch_size):
            xb = x[start:start + args.batch_size].to(device)
            yb = torch.tensor(labels[start:start + args.batch_size], device=device)
            codes = gen.tokenizer.encode(xb)
            pictures.append(xb.cpu())
            recons.append(gen.tokenizer.decode(codes).float().cpu())
            prefix = [branch[:keep] for branch in codes]
            edit = {} if keep_mask is None else {"source": codes, "keep_mask": keep_mask.to(device)}
            for j, column in enumerate(columns):
                column.append(gen.generate(
                    yb, prefix=prefix, cfg=args.cfg, cfg_schedule=args.cfg_schedule, top_k=args.top_k,
                    top_p=args.top_p, seed=args.seed, indices=range(j * n + start, j * n + start + len(xb)),
                    dtype=DTYPES[args.dtype], more_smooth=args.more_smooth, temperature=args.temperature,
                    **edit).cpu())
                bar.update(len(xb))
    scale = max(1, 96 // x.shape[-1])  # small pictures are drawn larger (nearest neighbour) to stay readable

    def cells(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.interpolate(torch.cat(parts), scale_factor=scale, mode="nearest")

    figure = progression_grid(cells(pictures), [cells(recons), *(cells(c) for c in columns)],
                              labels=["in", "all", *(str(j + 1) for j in range(args.num))])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_png(figure, args.out)
    region = "" if keep_mask is None else f" and the region of {args.mask} at every scale"
    print(f"{n} pictures completed {args.num} times each from their first {keep} of {scales} scales{region}: "
          f"{args.out}")
    return 0
