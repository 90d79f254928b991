"""Where a run reports: a plain-text log (OUT/log.txt), TensorBoard (OUT/tb), wandb when installed and asked for.

Only the main process writes; other processes get a logger that drops everything.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


class RunLogger:
    def __init__(self, out_dir: str | Path, *, enabled: bool, tensorboard: bool = True, wandb: bool = False,
                 wandb_project: str = "imagefolder", run_config: dict[str, Any] | None = None):
        self.enabled = enabled
        self.out = Path(out_dir)
        self._tb = self._wandb = None
        self._text = None
        if not enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        self._text = open(self.out / "log.txt", "a", buffering=1, encoding="utf-8",
                          errors="backslashreplace")  # file names that are not UTF-8 are written escaped
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(self.out / "tb"))
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError:
                raise RuntimeError("wandb logging was asked for (wandb: true) but the wandb package is not "
                                   "installed; pip install wandb, or set wandb: false") from None
            self._wandb = wandb_module.init(project=wandb_project, dir=str(self.out), config=run_config or {})

    def line(self, text: str) -> None:
        """A line in OUT/log.txt (with a timestamp)."""
        if self._text:
            self._text.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def scalars(self, values: dict[str, float], step: int, prefix: str = "train") -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            if self._tb:
                self._tb.add_scalar(f"{prefix}/{k}", v, step)
        if self._wandb:
            self._wandb.log({f"{prefix}/{k}": v for k, v in values.items()}, step=step)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "split": prefix, **{k: float(v) for k, v in values.items()}}) + "\n")

    def image(self, name: str, img: Image.Image, step: int) -> None:
        if not self.enabled:
            return
        if self._tb:
            self._tb.add_image(name, np.asarray(img.convert("RGB")), step, dataformats="HWC")
        if self._wandb:
            import wandb as wandb_module
            self._wandb.log({name: wandb_module.Image(img)}, step=step)

    def close(self) -> None:
        if self._tb:
            self._tb.close()
        if self._wandb:
            self._wandb.finish()
        if self._text:
            self._text.close()
            self._text = None
