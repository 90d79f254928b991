"""``imagefolder serve``: a web page (gradio) to sample, edit and reconstruct with a generator.

Without --generator it serves the demo model shipped in the package (class names from its judge, the demo's
sampling settings); otherwise any generator checkpoint or preset that 'imagefolder sample' takes. Tabs:

* Sample: a class, a number of pictures, a seed (picture i uses the random stream (seed, i), as 'imagefolder
  sample'); shows the pictures and the first one after each scale.
* Edit: upload a picture or pick one, paint the region to redraw, choose a class: the unpainted region keeps the
  picture's codes at every scale (a position is kept when at least half of its area is unpainted) and the rest is
  sampled. In-painting, out-painting (tick "keep the painted region") and class edits that keep the background.
* Reconstruct: upload a picture; shows the tokenizer's reconstruction after each scale.

The sampling options (cfg and its schedule, top-k, top-p, temperature, more smooth) apply to Sample and Edit.
Requests wait in one queue and run one at a time. The page listens on 127.0.0.1 (this computer only) unless
--host says otherwise. Needs gradio: pip install -e ".[serve]".
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from . import HelpFormatter, UsageError
from .sample import TOKENIZER_HELP

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="a web page (gradio) to sample, edit with a mask and reconstruct",
                       description=__doc__.replace("``", ""), formatter_class=HelpFormatter)
    p.add_argument("--generator", metavar="CKPT",
                   help="a generator checkpoint (official VAR .pt, VAR's var_d16.pth with --tokenizer, one of our "
                        "directories) or a preset; default: the demo model shipped in the package")
    p.add_argument("--tokenizer", metavar="SPEC", help=TOKENIZER_HELP)
    p.add_argument("--class-names", type=Path, metavar="FILE",
                   help="a text file with one class name a line, in class id order; default: the names the "
                        "checkpoint records, else 'class 0', 'class 1', ...")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on; 0.0.0.0 makes the page reachable from other computers")
    p.add_argument("--port", type=int, default=7860, help="the port to listen on")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs")
    p.add_argument("--max-images", type=int, default=16, metavar="N",
                   help="the most pictures one request may sample or edit")
    p.add_argument("--max-side", type=int, default=4096, metavar="PX",
                   help="the longest side an uploaded picture may have, in pixels")
    p.add_argument("--max-upload-mb", type=float, default=20.0, metavar="MB", help="the largest upload, in MB")
    p.set_defaults(run=run)


def require_gradio() -> None:
    if importlib.util.find_spec("gradio") is None:
        raise UsageError('serve needs gradio, which is not installed: pip install -e ".[serve]" (or pip install '
                         'gradio)')


def run(args) -> int:
    from ..serve.logic import InputError, Limits, load_served_model
    from .reconstruct import _device

    for name, value in (("max_images", args.max_images), ("max_side", args.max_side), ("port", args.port)):
        if value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not args.max_upload_mb > 0:
        raise UsageError(f"--max-upload-mb must be above 0, got {args.max_upload_mb}")
    require_gradio()
    try:
        model = load_served_model(args.generator, tokenizer=args.tokenizer, names_file=args.class_names,
                                  device=_device(args.device), limits=Limits(args.max_images, args.max_side))
    except InputError as e:
        raise UsageError(str(e)) from None
    from ..serve.app import build_app, launch
    app = build_app(model)
    if args.host not in LOCAL_HOSTS:
        print(f"note: --host {args.host} lets other computers reach the page")
    print(f"serving {model.source} on http://{args.host}:{args.port} (Ctrl-C stops)")
    launch(app, args.host, args.port, args.max_upload_mb)
    return 0
