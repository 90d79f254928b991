"""``imagefolder convert``: official checkpoint -> our format, or ours -> official."""
from __future__ import annotations

import argparse

from ..hub import SPEC_HELP
from ._outputs import add_overwrite_option, check_kind, check_output, checkpoint_kind


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert an official checkpoint to our format (safetensors + config.json), or back",
        description="Convert between the official checkpoint formats and ours. An ImageFolder tokenizer .pt "
                    "(imagenet-4096.pt, ...) or VAR .pt (imagenet-var-4096.pt), or VAR's release (the VQVAE "
                    "vae_ch160v4096z32.pth; a generator var_d16.pth ... var_d30.pth with --tokenizer its VQVAE) "
                    "becomes a directory with config.json and model.safetensors. One of our directories becomes an "
                    "official file: VAR's release for models on a VAR VQVAE (a generator's VQVAE is written next to "
                    "it as vae_ch{ch}v{V}z{C}.pth), the ImageFolder format otherwise (--format chooses).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="official .pt/.pth file, or one of our checkpoint directories" + SPEC_HELP)
    p.add_argument("--out", required=True,
                   help="output: a directory (from official) or a .pt/.pth file path (to official)")
    p.add_argument("--tokenizer", default=None,
                   help="for VAR's released generators: their VQVAE file (required); for official ImageFolder VAR "
                        "files whose args do not describe their tokenizer (the reference test checkpoints): a "
                        "tokenizer checkpoint, our directory or a preset name giving its shape" + SPEC_HELP)
    p.add_argument("--format", choices=("auto", "imagefolder", "var"), default="auto",
                   help="official format written from one of our directories: imagefolder (the ImageFolder "
                        "authors' .pt), var (VAR's release: plain state dicts), auto (var for tokenizers with VAR's "
                        "3x3 quant_conv, else imagefolder)")
    add_overwrite_option(p, "an existing --out file (and a generator's VQVAE file next to it), or write into a "
                         "non-empty --out folder, replacing its config.json and model.safetensors")
    p.set_defaults(run=run)


def _check_out(args, source) -> None:
    """Before any loading: an existing output is replaced only with --overwrite. ``source``: the checkpoint's
    local path, or None for an official file still on the hub."""
    from ..checkpoint import is_our_checkpoint, read_config
    from ..config import GeneratorConfig
    from ..loading import official_format, release_vqvae_path
    if source is None or not is_our_checkpoint(source):  # official -> our directory
        out = check_kind(args.out, "folder", purpose="our checkpoint (config.json, model.safetensors)")
        check_output(out, args.overwrite, kind="folder", holds=checkpoint_kind(out))
        return
    also = []
    cfg = read_config(source)
    if cfg.get("kind") == "generator":
        tok_cfg = GeneratorConfig.from_dict(cfg["config"]).tokenizer
        if (official_format(tok_cfg) if args.format == "auto" else args.format) == "var":
            also.append(release_vqvae_path(args.out, tok_cfg))
    check_output(args.out, args.overwrite, kind="file", purpose="the official checkpoint", also=also)


def run(args) -> int:
    from ..checkpoint import is_our_checkpoint, read_config
    from ..config import GeneratorConfig
    from ..hub import companion_tokenizer, is_hub_spec, parse, resolve
    from ..loading import convert, official_format, release_vqvae_path
    tokenizer = args.tokenizer if args.tokenizer is not None else companion_tokenizer(args.checkpoint)
    if is_hub_spec(args.checkpoint) and parse(args.checkpoint).is_file:
        _check_out(args, None)  # an official file on the hub: check the output before downloading it
    source = resolve(args.checkpoint)  # a folder of ours on the hub: its config says what is written
    _check_out(args, source)
    kind, path = convert(source, args.out, tokenizer=tokenizer, format=args.format)
    print(f"wrote {kind} to {path}")
    if kind == "generator" and is_our_checkpoint(source):
        tok_cfg = GeneratorConfig.from_dict(read_config(source)["config"]).tokenizer
        if (official_format(tok_cfg) if args.format == "auto" else args.format) == "var":
            print(f"wrote its tokenizer (VAR's VQVAE) to {release_vqvae_path(path, tok_cfg)}")
    return 0
