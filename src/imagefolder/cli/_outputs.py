"""What every command that writes results shares: an output that already holds earlier results is refused unless
``--overwrite`` (training runs, samples, checkpoints, figures, JSON reports, codes caches), checked before any
compute, with one line naming the path."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Iterable


def add_overwrite_option(p: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite`` with a help text saying what it replaces."""
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} (without this, an existing output is "
                   "refused)")


def check_kind(path: str | Path, kind: str, option: str = "--out", purpose: str = "") -> Path:
    """Refuse an output path of the wrong kind: a file where a folder is written (``kind`` "folder") or a folder
    where a file is written ("file")."""
    from ..data.images import printable
    from . import UsageError
    path = Path(path)
    for_what = f" for {purpose}" if purpose else ""
    if kind == "folder" and path.exists() and not path.is_dir():
        raise UsageError(f"{option} {printable(str(path))} is a file; give a folder{for_what}")
    if kind == "file" and path.is_dir():
        raise UsageError(f"{option} {printable(str(path))} is a folder; give a file name{for_what}")
    return path


def check_output(path: str | Path, overwrite: bool, *, kind: str = "file", option: str = "--out",
                 purpose: str = "", holds: str = "", also: Iterable[str | Path] = ()) -> Path:
    """Refuse to replace earlier results silently: an existing file (``kind`` "file"), or a non-empty folder
    ("folder"), at ``path`` or any of ``also`` (further files the command writes) is refused unless ``overwrite``.
    ``holds`` describes what is there for the message. Returns ``path``."""
    from ..data.images import printable
    from . import UsageError
    path = check_kind(path, kind, option, purpose)
    if overwrite:
        return path
    if kind == "folder":
        entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        if entries:
            what = holds or f"{len(entries)} entries, e.g. {entries[0]}"
            raise UsageError(f"{option} {printable(str(path))} is not empty ({printable(what)}); pass --overwrite "
                             f"to replace its results, or choose another {option}")
    elif path.exists():
        raise UsageError(f"{option} {printable(str(path))} already exists{f' ({holds})' if holds else ''}; pass "
                         f"--overwrite to replace it, or choose another {option}")
    for other in map(Path, also):
        if other.exists():
            raise UsageError(f"{printable(str(other))}, written with {option} {printable(str(path))}, already "
                             f"exists; pass --overwrite to replace it, or choose another {option}")
    return path


def checkpoint_kind(folder: Path) -> str:
    """'it holds a tokenizer' (etc.) when ``folder`` holds one of our checkpoints, else '' (for messages only)."""
    if not (folder / "config.json").is_file():
        return ""
    from ..checkpoint import read_config
    try:
        return f"it holds a {read_config(folder).get('kind')}"
    except Exception:  # noqa: BLE001 - only for the message
        return ""


def remove_outputs(folder: str | Path, names: Iterable[str]) -> None:
    """Delete the entries ``names`` of ``folder`` (files or folders) that an earlier run of the command wrote:
    what --overwrite replaces, so that no stale result of it stays beside the new ones. Other entries are kept."""
    folder = Path(folder)
    for name in names:
        p = folder / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
