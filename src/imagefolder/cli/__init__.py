"""The ``imagefolder`` command line: one entry point, one module per subcommand.

Each subcommand module defines ``add_parser(subparsers)`` (which registers its options with full help text) and
``run(args) -> int``. Expected failures (a bad checkpoint, an unreadable image, a wrong option) are printed as one
plain line on stderr with exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..config import ConfigError
from ..official import CheckpointError

SUBCOMMANDS = ("demo", "ablate", "reconstruct", "sample", "complete", "convert", "make-dataset", "train-tokenizer",
               "train-classifier", "evaluate", "probe", "train-generator", "pretokenize")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Defaults after the options that have one (not flags or unset options); the description keeps its lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


class UsageError(Exception):
    """The command line asks for something impossible; the message says what to change."""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    parser = argparse.ArgumentParser(
        prog="imagefolder",
        description="ImageFolder: image tokenizer with folded (product-quantized, multi-scale) tokens and a "
                    "class-conditional VAR generator. Run 'imagefolder COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"imagefolder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f".{name.replace('-', '_')}", __name__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    from ..data.images import ImageError
    from ..train.engine import TrainingError
    try:
        return int(args.run(args) or 0)
    except (CheckpointError, ConfigError, UsageError, FileNotFoundError, NotADirectoryError, ImageError,
            TrainingError) as e:
        print(f"imagefolder {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"imagefolder {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
