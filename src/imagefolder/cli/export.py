"""``imagefolder export``: any checkpoint -> a folder to publish (our format + a model card), without network."""
from __future__ import annotations

from pathlib import Path

from . import HelpFormatter
from ..hub import SPEC_HELP
from ._outputs import add_overwrite_option, check_output, checkpoint_kind


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="write a checkpoint as a folder to publish: config.json, model.safetensors, README.md card",
        description="Write a tokenizer or generator in our format (config.json + model.safetensors) with a model "
                    "card (README.md: what it is, how to load it, its metrics, the command that made it) into "
                    "--out. Works offline for local checkpoints; 'imagefolder push' uploads the folder, and "
                    "load_tokenizer / load_generator / every checkpoint option read it back from the hub as "
                    "hf://OWNER/NAME.",
        formatter_class=HelpFormatter)
    p.add_argument("checkpoint", help="the model: one of our checkpoint folders (a run's last/ or best/, "
                                      "src/imagefolder/assets/demo/generator), or an official file" + SPEC_HELP)
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    p.add_argument("--tokenizer", metavar="SPEC",
                   help="for VAR's released generators (which hold no tokenizer): their VQVAE, as for convert")
    p.add_argument("--metrics", metavar="JSON",
                   help="a JSON report whose numbers go into the card: {\"metrics\": {...}, \"command\": ...} as "
                        "demo / ablate / evaluate write it, or a flat {name: number}; its command is used unless "
                        "--command is given")
    p.add_argument("--command", metavar="TEXT", help="the command that made the model, for the card")
    p.add_argument("--title", metavar="TEXT", help="the card's title (default: 'imagefolder KIND')")
    add_overwrite_option(p, "the files of a non-empty --out")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..publish import export, read_metrics
    check_output(args.out, args.overwrite, kind="folder", holds=checkpoint_kind(Path(args.out)))
    metrics, command = read_metrics(args.metrics) if args.metrics else ({}, None)
    kind, out = export(args.checkpoint, args.out, tokenizer=args.tokenizer, metrics=metrics,
                       command=args.command or command, title=args.title)
    print(f"wrote {kind} with its model card to {out}; publish it with: imagefolder push {out} --repo OWNER/NAME")
    return 0
