"""The demo model shipped inside the package: where it lives, checking it is there, and shipping a new one.

An assets folder holds ``generator/`` (our generator checkpoint, its tokenizer in ``generator/tokenizer/``; the
model shipped before that keeps both in one file, which loads as well), ``classifier/``
(the judge) and ``demo.json`` (the dataset the models were trained on, the command that made them and its
numbers). Weights are stored in fp16 and loaded as fp32. ``ship`` writes a new folder beside the old one and
swaps it in with renames, so a reader never sees a half-written model.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..checkpoint import CONFIG_NAME, WEIGHTS_NAME, folder_files, read_config
from . import recipes

DEFAULT_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "demo"
GENERATOR, CLASSIFIER, INFO = "generator", "classifier", "demo.json"
_STAGING, _OLD = ".ship.partial", ".ship.old"


def read_assets(folder: Path) -> dict[str, Any]:
    """``demo.json`` of an assets folder ({} when absent); FileNotFoundError naming the command that makes the
    models when they are missing."""
    missing = [f"{name}/" for name in (GENERATOR, CLASSIFIER)
               if not all((folder / name / f).is_file() for f in (CONFIG_NAME, WEIGHTS_NAME))]
    if missing:
        raise FileNotFoundError(f"no demo model in {folder} ({' and '.join(missing)} missing): make it with "
                                f"'{recipes.ship_command()}', or point --assets at a folder that has one")
    info = folder / INFO
    return json.loads(info.read_text()) if info.is_file() else {}


def _write_half(src: Path, dst: Path) -> None:
    """Copy a safetensors file with its fp32 tensors stored as fp16 (half the package size; loading casts them back
    to the model's fp32). A tensor fp16 cannot hold (beyond its range) stays fp32."""
    with safe_open(src, framework="pt") as f:
        metadata = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    for k, v in state.items():
        if v.dtype == torch.float32 and (v.numel() == 0 or v.abs().max() <= torch.finfo(torch.float16).max):
            state[k] = v.half()
    save_file(state, dst, metadata=metadata)


def ship(generator_dir: Path, classifier_dir: Path, info: dict[str, Any], folder: Path) -> None:
    """Copy the model files of ``generator_dir`` and ``classifier_dir`` and ``info`` into ``folder``, replacing
    what is there only once the new copy is complete."""
    folder = folder.resolve()
    stage, old = folder.parent / f"{folder.name}{_STAGING}", folder.parent / f"{folder.name}{_OLD}"
    for leftover in (stage, old):  # from a run killed while shipping
        shutil.rmtree(leftover, ignore_errors=True)
    for src, name in ((generator_dir, GENERATOR), (classifier_dir, CLASSIFIER)):
        for file in folder_files(read_config(src)):  # a generator's tokenizer/ too
            dst = stage / name / file
            dst.parent.mkdir(parents=True, exist_ok=True)
            if file.endswith(WEIGHTS_NAME):
                _write_half(src / file, dst)
            else:
                shutil.copy2(src / file, dst)
    (stage / INFO).write_text(json.dumps(info, indent=2) + "\n")
    if folder.exists():
        folder.rename(old)
    stage.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
