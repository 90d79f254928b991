"""``imagefolder make-dataset NAME --out DIR``: write a built-in dataset in the ImageFolder layout, with no download.

Files: ``DIR/train/CLASS/NNNNN.png``, ``DIR/val/CLASS/NNNNN.png`` (one folder per class; train and val are different
pictures) and ``DIR/dataset.json`` (the options, counts and the classes in ImageFolder label order). The same name,
size and seed give byte-identical files. Sets:

* shapes: coloured shapes (circle, square, triangle, star, ring, cross, hexagon, crescent, heart, stripes) with
  random colour, size, position, rotation and mottled gradient backgrounds;
* photos: random square crops (position, scale, flip) of the colour photographs shipped with scikit-image, one
  class per photograph (astronaut, cat, coffee, galaxies, tissue, motorcycle, retina, rocket).

A DIR that holds anything is refused unless --overwrite is given; then DIR/train and DIR/val are replaced once the
new ones are complete, and other files in DIR are kept.
"""
from __future__ import annotations

import argparse

from . import UsageError


def add_parser(sub) -> None:
    from ..data.make_dataset import DATASETS
    p = sub.add_parser(
        "make-dataset", help="write a built-in dataset (shapes, photos) in ImageFolder layout: DIR/{train,val}/CLASS",
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=tuple(DATASETS), metavar="NAME", help=f"the set: {', '.join(DATASETS)}")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--size", type=int, default=32, metavar="PX", help="image side in pixels (default: 32)")
    p.add_argument("--train-per-class", type=int, metavar="N",
                   help="training pictures per class (default: "
                        + ", ".join(f"{n} {s.train_per_class}" for n, s in DATASETS.items()) + ")")
    p.add_argument("--val-per-class", type=int, default=50, metavar="N",
                   help="validation pictures per class (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="picture set seed (default: 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty DIR, replacing DIR/train and DIR/val when the new ones are complete")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..data.make_dataset import make_dataset

    for option, value in (("size", args.size), ("train-per-class", args.train_per_class),
                          ("val-per-class", args.val_per_class)):
        if value is not None and value < 1:
            raise UsageError(f"--{option} must be at least 1, got {value}")
    try:
        s = make_dataset(args.name, args.out, size=args.size, train_per_class=args.train_per_class,
                         val_per_class=args.val_per_class, seed=args.seed, overwrite=args.overwrite, progress=True)
    except FileExistsError as e:
        raise UsageError(f"{e}; choose another --out, or pass --overwrite to replace its train/ and val/") from None
    print(f"{s['dataset']}: {s['train']} train + {s['val']} val images ({s['train_per_class']} + "
          f"{s['val_per_class']} per class, {len(s['classes'])} classes, {s['size']} px, seed {s['seed']}) in "
          f"{s['out']} in {s['seconds']:.1f} s; classes: {', '.join(s['classes'])}")
    return 0
