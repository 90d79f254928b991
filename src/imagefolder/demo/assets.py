"""The demo model shipped inside the package: where it lives, checking it is there, and shipping a new one.

An assets folder holds ``generator/`` (our generator checkpoint, which includes its tokenizer), ``classifier/``
(the judge) and ``demo.json`` (the dataset the models were trained on, the command that made them and its
numbers). ``ship`` writes a new folder beside the old one and swaps it in with renames, so a reader never sees a
half-written model.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..checkpoint import CONFIG_NAME, WEIGHTS_NAME
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


def ship(generator_dir: Path, classifier_dir: Path, info: dict[str, Any], folder: Path) -> None:
    """Copy the model files of ``generator_dir`` and ``classifier_dir`` and ``info`` into ``folder``, replacing
    what is there only once the new copy is complete."""
    folder = folder.resolve()
    stage, old = folder.parent / f"{folder.name}{_STAGING}", folder.parent / f"{folder.name}{_OLD}"
    for leftover in (stage, old):  # from a run killed while shipping
        shutil.rmtree(leftover, ignore_errors=True)
    for src, name in ((generator_dir, GENERATOR), (classifier_dir, CLASSIFIER)):
        (stage / name).mkdir(parents=True)
        for f in (CONFIG_NAME, WEIGHTS_NAME):
            shutil.copy2(src / f, stage / name / f)
    (stage / INFO).write_text(json.dumps(info, indent=2) + "\n")
    if folder.exists():
        folder.rename(old)
    stage.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
