"""Our checkpoint format: a directory with ``config.json`` and ``model.safetensors``, each written atomically.

``config.json`` = ``{"format": "imagefolder", "version": 1, "kind": "tokenizer" | "generator", "config": {...}}``.
A generator directory (version 2) holds the generator's own weights and, in the subfolder ``tokenizer/``, its
tokenizer as a tokenizer directory of its own; the generator configuration names the tokenizer configuration too,
so the directory loads alone. Version 1 generator directories kept both in one state dict, the tokenizer's keys
under a prefix: ``generator_weights`` is the one reader that still knows that layout.
Nothing here unpickles: safetensors holds only tensors, JSON only plain values.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

FORMAT, VERSION = "imagefolder", 2   # VERSION: the newest format version this code reads
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
TOKENIZER_DIR = "tokenizer"          # a generator directory's tokenizer (version 2)
GENERATOR_VERSION = 2                # generator directories are written in version 2; everything else in 1


TRAIN_FORMAT = "imagefolder-train"   # the "format" of a trainer's resume checkpoint (train/engine.py)


def _umask() -> int:
    """The process umask (read by setting and restoring it: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then move the file into place: readers never see a half-written file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; give a file name", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes 0600 files and some writers (safetensors) recreate the file: give it, after writing, the
        # permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and not e.filename:
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
        if not isinstance(e, OSError) and _says_disk_full(e):  # e.g. safetensors' SafetensorError (os error 28)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise


def _says_disk_full(e: BaseException) -> bool:
    text = str(e)
    return any(s in text for s in ("os error 28", "No space left", "StorageFull", "Disk quota exceeded"))


def is_our_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return (path / CONFIG_NAME).is_file() if path.is_dir() else path.name in (CONFIG_NAME, WEIGHTS_NAME)


def save_model(model: torch.nn.Module, kind: str, config: Any, out_dir: str | Path,
               extra: dict[str, Any] | None = None, *, version: int = 1) -> Path:
    """Write ``model`` (weights) and its ``config`` (a dataclass with ``to_dict``) to ``out_dir``."""
    out = Path(out_dir)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT, "kind": kind}))
    meta = {"format": FORMAT, "version": version, "kind": kind, "config": config.to_dict(), **(extra or {})}
    atomic_write(out / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
    return out


def save_generator_files(generator: torch.nn.Module, tokenizer: torch.nn.Module, out_dir: str | Path,
                         extra: dict[str, Any] | None = None) -> Path:
    """A generator directory (version 2): ``tokenizer/`` first, then the generator's own weights and config."""
    out = Path(out_dir)
    save_model(tokenizer, "tokenizer", tokenizer.config, out / TOKENIZER_DIR)
    return save_model(generator, "generator", generator.config, out, extra, version=GENERATOR_VERSION)


def folder_files(meta: dict[str, Any]) -> tuple[str, ...]:
    """The files (relative paths) a directory of our format with this ``config.json`` consists of."""
    files = (CONFIG_NAME, WEIGHTS_NAME)
    if meta.get("kind") == "generator" and meta.get("version", 1) >= 2:
        files += tuple(f"{TOKENIZER_DIR}/{name}" for name in files)
    return files


def generator_weights(path: str | Path, part: str) -> dict[str, torch.Tensor]:
    """The state dict of a generator directory's ``part``: "generator" (its own weights) or "tokenizer".

    Version 2 keeps the tokenizer in ``tokenizer/``; version 1 kept both in one file, the tokenizer's keys under
    the prefix ``tokenizer.`` (the only place that prefix is known)."""
    directory = checkpoint_dir(path)
    meta = read_config(directory)
    if meta.get("version", 1) >= 2:
        return read_weights(directory / TOKENIZER_DIR / WEIGHTS_NAME if part == "tokenizer" else directory)
    prefix = "tokenizer."
    state = read_weights(directory)
    if part == "tokenizer":
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if not k.startswith(prefix)}


def checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory ``path`` names: itself, or the directory holding the file it names."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def read_config(path: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of one of our checkpoint directories (or of the directory holding the file)."""
    directory = checkpoint_dir(path)
    cfg_path = directory / CONFIG_NAME
    try:
        meta = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: no {CONFIG_NAME} (not an imagefolder checkpoint directory)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{cfg_path}: not an imagefolder checkpoint config")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{cfg_path}: written by a newer imagefolder (format version {meta['version']})")
    return meta


def config_from(cls, meta: dict[str, Any], where: str | Path):
    """``cls.from_dict(meta["config"])`` with a wrong field or value reported as a CheckpointError naming the file."""
    from .config import ConfigError
    try:
        return cls.from_dict(meta["config"])
    except ConfigError as e:
        raise CheckpointError(f"{where}: its {CONFIG_NAME} does not describe a valid model ({e})") from None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    weights = checkpoint_dir(path) / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file missing")
    try:
        return load_file(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({e})") from None


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """``load_state_dict(strict=True)`` with one clear error naming the offending keys or shapes."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise CheckpointError(f"{where}: weights do not match the configuration: {'; '.join(parts)}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(ours[k].shape):
            raise CheckpointError(f"{where}: {k} has shape {tuple(v.shape)} in the file but {tuple(ours[k].shape)} "
                                  "in the model")
    model.load_state_dict({k: v.to(ours[k].dtype) for k, v in state.items()}, strict=True, assign=True)
