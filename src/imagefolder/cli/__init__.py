"""The ``imagefolder`` command line: one entry point, one module per subcommand.

Each subcommand module defines ``add_parser(subparsers)`` (which registers its options with full help text) and
``run(args) -> int``. Expected failures (a bad checkpoint, an unreadable image, a wrong option) are printed as one
plain line on stderr with exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import signal
import sys
import threading

from ..config import ConfigError
from ..errors import CheckpointError

SUBCOMMANDS = ("demo", "ablate", "reconstruct", "sample", "complete", "serve", "convert", "make-dataset",
               "train-tokenizer", "train-classifier", "evaluate", "probe", "train-generator", "pretokenize", "export",
               "push")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Defaults after the options that have one (not flags or unset options); the description keeps its lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


class UsageError(Exception):
    """The command line asks for something impossible; the message says what to change."""


class Stopped(KeyboardInterrupt):
    """SIGTERM arrived (inside ``stop_on_signals``): raised like the KeyboardInterrupt of SIGINT, so the command
    unwinds the same way (temporary files of atomic writes are removed) and exits with 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals():
    """For commands made of stages (demo, ablate): SIGTERM raises ``Stopped`` as SIGINT raises KeyboardInterrupt,
    instead of killing the process on the spot; ``main`` turns either into one line and exit status 128 + signal.
    A trainer running as a stage installs its own handlers meanwhile (it saves a checkpoint, raises
    ``Interrupted``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stage_interrupted(e, next_step: str):
    """The ``Interrupted`` of a trainer run as a stage of a larger command, with what continuing means there."""
    from ..data.images import printable
    from ..train.control import Interrupted
    return Interrupted(f"stopped by {e.signame} while training the {e.kind} at step {e.step} (checkpoint "
                       f"{printable(str(e.checkpoint))} written); {next_step}", e.signum, kind=e.kind, step=e.step,
                       checkpoint=e.checkpoint)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name if signum in iter(signal.Signals) else f"signal {signum}"


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
    from ..allocator import keep_freed_memory
    keep_freed_memory()  # large tensors reuse freed heap memory instead of fresh pages (IMAGEFOLDER_MALLOC=system: off)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args.run(args) or 0)
    except (*expected_errors(), OSError) as e:
        if isinstance(e, OSError) and not _expected_os_error(e):
            raise  # not a condition the user can fix: keep the traceback
        from ..train.control import Interrupted
        if isinstance(e, Interrupted):  # SIGTERM / SIGINT: a trainer saved a checkpoint; the message says what next
            print(f"imagefolder {args.command}: {one_line(e)}", file=sys.stderr)
            return 128 + e.signum
        print(f"imagefolder {args.command}: error: {one_line(e, _option_holding(parser, args, e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # SIGINT, or SIGTERM inside stop_on_signals
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"imagefolder {args.command}: stopped by {signal_name(signum)}", file=sys.stderr)
        return 128 + signum


# failures of the file system the user can fix (space, permissions, a file where a folder belongs, ...)
_OS_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EEXIST, errno.EISDIR,
              errno.ENOTDIR, errno.ENOENT, errno.ENAMETOOLONG, errno.ELOOP, errno.EFBIG}


def expected_errors() -> tuple[type[BaseException], ...]:
    """The error classes the CLI reports as one line with exit status 2 (anything else keeps its traceback)."""
    from ..data.fresh import FreshPicturesError
    from ..data.images import ImageError
    from ..train.control import TrainingError
    return (CheckpointError, ConfigError, UsageError, ImageError, TrainingError, FreshPicturesError,
            FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError)


def _expected_os_error(e: OSError) -> bool:
    return e.errno in _OS_ERRNOS or isinstance(e, expected_errors())


def _option_holding(parser: argparse.ArgumentParser, args: argparse.Namespace, e: BaseException) -> str | None:
    """For an error about a checkpoint spec (``spec`` attribute): the option the user gave it with, e.g.
    '--generator' (or the positional's name), so the message can say where to pass a local copy instead."""
    spec = getattr(e, "spec", None)
    if spec is None:
        return None
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    command = sub.choices.get(args.command) if sub is not None else None
    for action in command._actions if command is not None else ():
        if action.dest != "help" and str(getattr(args, action.dest, None)) == str(spec):
            return action.option_strings[0] if action.option_strings else action.dest.upper()
    return None


def one_line(e: BaseException, option: str | None = None) -> str:
    """The message of an expected error on one line; an OSError names its file and what to do about it; an
    error about a hub checkpoint that cannot be fetched says which ``option`` takes the local copy."""
    from ..data.images import printable
    from ..hub import HubUnavailableError
    if isinstance(e, HubUnavailableError) and option is not None:
        return " ".join(printable(e.for_option(option)).split())
    if isinstance(e, OSError) and e.strerror:  # raised by the system (ours carry a whole sentence instead)
        where = f"{e.filename}: " if e.filename else ""
        hint = {errno.ENOSPC: "; free some space (a training run continues with --resume auto)",
                errno.EDQUOT: "; free some space (a training run continues with --resume auto)",
                errno.EACCES: "; check the permissions", errno.EROFS: "; write somewhere else"}.get(e.errno, "")
        text = f"{where}{e.strerror}{hint}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(printable(text).split())


if __name__ == "__main__":
    sys.exit(main())
