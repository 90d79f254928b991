"""``imagefolder pretokenize``: tokenize a training set once, for 'imagefolder train-generator --codes-cache'.

Every image under DIR (ImageFolder layout: DIR/CLASS/image.png, or DIR/train/CLASS/... when DIR has a train
folder, as train-generator reads it) is encoded in float32 as is and mirrored; the codes of all scales and
branches, the labels, the class names, the tokenizer's configuration and a fingerprint of its weights go into one
safetensors file, written atomically. Training from the cache picks the flip of each image exactly as training on
the fly would, so both train identically; a run with a different tokenizer refuses the cache.
"""
from __future__ import annotations

import argparse

from ..hub import SPEC_HELP
from . import UsageError
from ._outputs import add_overwrite_option, check_output


def add_parser(sub) -> None:
    p = sub.add_parser("pretokenize", help="encode a training set once into a codes cache for train-generator",
                       description=__doc__.replace("``", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, metavar="CKPT",
                   help="the trained tokenizer: one of our checkpoint directories or an official tokenizer .pt"
                   + SPEC_HELP)
    p.add_argument("--data", required=True, metavar="DIR", help="training images (ImageFolder layout)")
    p.add_argument("--out", required=True, metavar="FILE", help="the cache to write (e.g. codes.safetensors)")
    add_overwrite_option(p, "an existing --out cache")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per forward pass (default: 64)")
    p.add_argument("--num-workers", type=int, default=2, metavar="N", help="image-decoding processes (default: 2)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto (default): the GPU when there is one, else the CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..data.folder import split_dir
    from ..distributed import pick_device
    from ..loading import load_tokenizer
    from ..train.pretokenize import pretokenize
    if args.batch_size < 1 or args.num_workers < 0:
        raise UsageError("--batch-size must be >= 1 and --num-workers >= 0")
    check_output(args.out, args.overwrite, purpose="the codes cache")
    try:
        device = pick_device(args.device)
    except RuntimeError as e:
        raise UsageError(str(e)) from None
    tok = load_tokenizer(args.tokenizer)
    s = pretokenize(tok, split_dir(args.data, "train"), args.out, batch_size=args.batch_size, device=device,
                    num_workers=args.num_workers, show_progress=not args.no_progress)
    print(f"{s['images']} images x 2 flips -> {s['out']} in {s['seconds']:.1f} s ({s['images_per_s']:.1f} "
          f"encodings/s); {s['unreadable']} unreadable files skipped")
    return 0
