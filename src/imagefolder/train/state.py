"""Training checkpoints: everything needed to continue a run exactly, written atomically, read without unpickling.

A training checkpoint ``OUT/checkpoints/step-00001234.pt`` is a ``torch.save`` of plain containers and tensors only
(state dicts of models, EMA, optimizers and loss scalers, the step/epoch counters, the data position, every RNG
state and the options/config as dicts), so ``torch.load(weights_only=True)`` reads it. Files are written to a
temporary name and renamed: a run killed during a write leaves the previous checkpoint as the newest complete one.
Alongside, ``OUT/last`` and ``OUT/best`` hold the (EMA) model in the inference format that ``load_tokenizer`` /
``load_generator`` read.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import atomic_write
from ..errors import CheckpointError

_NAME = re.compile(r"^step-(\d{8,})\.pt$")


def rng_state() -> dict[str, Any]:
    """The state of every random stream a training step may draw from."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
            "python": _to_lists(random.getstate()),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_to_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


class Checkpoints:
    """The training checkpoints of one output folder."""

    def __init__(self, out_dir: str | Path, keep: int = 2):
        self.dir = Path(out_dir) / "checkpoints"
        self.keep = keep

    def path(self, step: int) -> Path:
        return self.dir / f"step-{step:08d}.pt"

    def all(self) -> list[Path]:
        """Complete checkpoints, oldest first (temporary files of an interrupted write are not listed)."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        paths = self.all()
        return paths[-1] if paths else None

    def save(self, step: int, state: dict[str, Any]) -> Path:
        path = self.path(step)
        atomic_write(path, lambda tmp: _torch_save(state, tmp))
        for old in self.all()[:-self.keep]:
            old.unlink(missing_ok=True)
        return path


def remove_stale_temporaries(out_dir: str | Path) -> list[Path]:
    """Delete the temporary files of writes that a killed run left behind in OUT (checkpoints/, last/, best/):
    ``atomic_write`` names them ``.NAME.XXXXXX.tmp`` and renames them when complete, so none is ever read."""
    removed = []
    for folder in (Path(out_dir) / "checkpoints", Path(out_dir) / "last", Path(out_dir) / "best"):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    return removed


def _torch_save(state: dict[str, Any], path: str) -> None:
    """``torch.save`` through a Python file, so a failed write (a full disk) is an OSError naming its errno."""
    with open(path, "wb") as f:
        try:
            torch.save(state, f)
        except RuntimeError as e:  # torch's zip writer turns the OSError of a failed write into a RuntimeError
            cause = e.__context__
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__context__
            if cause is None:
                raise
            raise cause from None


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint written by ``Checkpoints.save`` (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file is not a usable checkpoint
        raise CheckpointError(f"{path}: not a readable training checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != "imagefolder-train":
        raise CheckpointError(f"{path}: not an imagefolder training checkpoint")
    return state


def resolve_resume(spec: str | None, out_dir: str | Path) -> Path | None:
    """``auto``: the newest complete checkpoint in OUT (None when there is none); a path: that file; None: None."""
    if spec is None or spec == "":
        return None
    if spec == "auto":
        return Checkpoints(out_dir).latest()
    path = Path(spec)
    if path.is_dir():
        latest = Checkpoints(path).latest() or Checkpoints(path.parent).latest()
        if latest is None:
            raise FileNotFoundError(f"--resume {spec}: no training checkpoint in that folder")
        return latest
    if not path.is_file():
        raise FileNotFoundError(f"--resume {spec}: no such checkpoint file")
    return path
