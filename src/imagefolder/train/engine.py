"""The training loop every stage shares (tokenizer, generator, classifier): data order, accumulation, mixed
precision, non-finite guard, checkpoints, validation and the best model, progress, time budget, resumption. A stage
subclasses ``Trainer`` and fills in the model-specific hooks. How a run stops is in ``control``, the validation
data in ``validation``, the collectives in ``imagefolder.distributed``.

One optimizer step consumes ``gradient_accumulation_steps`` micro-batches per process; the global batch is
``micro_batch * accumulation * world_size``. The position in the data (epoch, micro-batches consumed) and every
RNG state go into each checkpoint, and the DataLoader draws its worker seeds from its own generator, so a resumed
run on CPU in fp32 continues bit-identically.

Glossary: ``B`` micro-batch per process, ``W`` world size (processes).
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..checkpoint import TRAIN_FORMAT
from ..data.folder import Batch, collate_skip_bad
from ..data.images import printable
from ..distributed import DistInfo, all_gather_object, all_reduce_
from .control import Interrupted, TrainingError, rng_preserved, stop_signals_noted
from .logger import RunLogger
from .optim import lr_factor, set_lr
from .sampler import ResumableSampler
from .state import Checkpoints, load_train_state, remove_stale_temporaries, rng_state, set_rng_state

# the share of a run's steps that may be skipped as non-finite before the run counts as failed
MAX_NONFINITE_SHARE = 0.5


def _nonfinite_keys(tree: Any, prefix: str = "") -> list[str]:
    """Paths of floating-point tensors in a nested dict/list that hold NaN or inf."""
    if isinstance(tree, torch.Tensor):
        return [prefix] if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else []
    if isinstance(tree, dict):
        return [k for key, v in tree.items() for k in _nonfinite_keys(v, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(tree, (list, tuple)):
        return [k for i, v in enumerate(tree) for k in _nonfinite_keys(v, f"{prefix}.{i}")]
    return []


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long a run is: fixed once the training data is known, before the models are built (``build`` gets it)."""

    steps_per_epoch: int
    schedule_steps: int   # what the lr schedule spans: the configured epochs
    total_steps: int      # where the run stops: ``max_steps`` only stops it earlier
    warmup_steps: int

    @classmethod
    def of(cls, opts, steps_per_epoch: int) -> "Schedule":
        schedule_steps = opts.epochs * steps_per_epoch
        total = schedule_steps if opts.max_steps is None else min(schedule_steps, opts.max_steps)
        warmup = opts.warmup_steps if opts.warmup_steps is not None else int(round(opts.warmup_epochs * steps_per_epoch))
        return cls(steps_per_epoch, schedule_steps, total, warmup)


class Trainer(abc.ABC):
    """Subclasses set ``kind`` and implement ``build``, ``train_step``, ``validate``, ``export`` and
    ``model_states`` / ``load_model_states``. ``opts`` and ``model_config`` arrive resolved and frozen (what the
    run logs is what it trains)."""

    kind = "model"
    best_metric: tuple[str, bool] = ("loss", False)  # (validation metric, higher is better)

    @property
    def model_dir(self) -> Path:
        """Where the latest model goes in the inference format (``export``); the best one goes to OUT/best."""
        return self.out / "last"

    def __init__(self, opts, model_config, out_dir: str | Path, info: DistInfo, *, resume: str | Path | None = None,
                 show_progress: bool = True):
        self.opts, self.model_config, self.info = opts, model_config, info
        self.out = Path(out_dir)
        self.device = info.device
        self.resume_path = Path(resume) if resume else None
        self.show_progress = show_progress and info.is_main
        W, A = info.world_size, opts.gradient_accumulation_steps
        if opts.global_batch_size % (W * A):
            raise TrainingError(f"global_batch_size {opts.global_batch_size} is not divisible by processes ({W}) x "
                                f"gradient_accumulation_steps ({A})")
        self.micro_batch = opts.global_batch_size // (W * A)
        self.step = self.epoch = self.micro_in_epoch = 0
        self.nonfinite_total = self.nonfinite_run = 0
        self.bad_files: list[str] = []          # unreadable training files, in the order met
        self.val_bad_files: set[str] = set()    # unreadable validation files (validation.validation_batches)
        self.best_value: float | None = None
        self.history: list[dict[str, float]] = []
        self.ckpts = Checkpoints(self.out, opts.keep_checkpoints)
        if self.resume_path is None and self.ckpts.all():
            raise TrainingError(f"{printable(str(self.out))} holds the checkpoints of an earlier run; continue it with "
                                "--resume auto, or start afresh in a new --out (or with --overwrite)")
        if self.resume_path is not None and self.ckpts.all() and \
                self.resume_path.resolve().parent != self.ckpts.dir.resolve():
            raise TrainingError(f"{printable(str(self.out))} holds the checkpoints of another run than "
                                f"{printable(str(self.resume_path))}; continuing that one here would mix the two. "
                                "Give an empty --out (or --resume auto to continue the run in this one)")
        self.log = RunLogger(self.out, enabled=info.is_main, tensorboard=opts.tensorboard, wandb=opts.wandb,
                             wandb_project=opts.wandb_project, run_config=self.run_config())
        self.scalers: dict[str, torch.amp.GradScaler] = {}

    # hooks -------------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def build(self, schedule: Schedule) -> None:
        ...

    @abc.abstractmethod
    def train_dataset(self) -> Dataset:
        ...

    @abc.abstractmethod
    def train_step(self, micro: list[Batch]) -> dict[str, float]:
        ...

    def validate(self) -> dict[str, float]:
        return {}

    @abc.abstractmethod
    def export(self, out_dir: Path) -> None:
        ...

    @abc.abstractmethod
    def model_states(self) -> dict[str, Any]:
        ...

    @abc.abstractmethod
    def load_model_states(self, states: dict[str, Any]) -> None:
        ...

    # helpers for subclasses --------------------------------------------------------------------------------------
    def run_config(self) -> dict[str, Any]:
        return {"options": dataclasses.asdict(self.opts), "model": self.model_config.to_dict()}

    def autocast(self):
        mp = self.opts.mixed_precision
        if mp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if mp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def scaler(self, name: str) -> torch.amp.GradScaler | None:
        """A loss scaler per optimizer for fp16 on CUDA (bf16 and fp32 need none)."""
        if self.opts.mixed_precision != "fp16" or self.device.type != "cuda":
            return None
        if name not in self.scalers:
            self.scalers[name] = torch.amp.GradScaler("cuda")
        return self.scalers[name]

    def backward(self, loss: torch.Tensor, name: str) -> None:
        s = self.scaler(name)
        (s.scale(loss) if s else loss).backward()

    def no_sync(self, module: nn.Module, last: bool):
        """Skip the DDP gradient all-reduce on all but the last micro-batch of a step."""
        if last or not hasattr(module, "no_sync"):
            return contextlib.nullcontext()
        return module.no_sync()

    def optimizer_step(self, name: str, optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                       lr: float) -> tuple[bool, float]:
        """Unscale, clip, check finiteness (agreed across processes), step or skip. Returns (stepped, grad norm)."""
        s = self.scaler(name)
        if s:
            s.unscale_(optimizer)
        max_norm = self.opts.max_grad_norm if self.opts.max_grad_norm > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros(())
        ok = torch.tensor(float(torch.isfinite(norm)), device=self.device)
        all_reduce_(ok, "min")
        stepped = bool(ok.item() > 0)
        set_lr(optimizer, lr)
        if s:
            s.step(optimizer) if stepped else None
            s.update()
        elif stepped:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return stepped, float(norm)

    def note_nonfinite(self, stepped: bool, what: str) -> None:
        if stepped:
            self.nonfinite_run = 0
            return
        self.nonfinite_total += 1
        self.nonfinite_run += 1
        self.log.line(f"step {self.step}: non-finite {what}; update skipped ({self.nonfinite_total} so far)")
        if self.nonfinite_run >= self.opts.max_nonfinite:
            raise TrainingError(
                f"{self.nonfinite_run} steps in a row produced non-finite {what} (step {self.step}); the run stops "
                f"without writing a checkpoint. Lower lr, enable gradient clipping (max_grad_norm), or use "
                f"mixed_precision none/bf16; resume from the last good checkpoint with --resume auto.")

    def budget_share(self) -> float:
        """Share of the time budget used so far (0 without a budget)."""
        budget = self.opts.time_budget_minutes
        return 0.0 if not budget else (time.time() - self._t_start) / (60 * budget)

    def lr_now(self, base_lr: float) -> float:
        step = self.step
        if self.opts.time_budget_minutes:  # the schedule follows the clock, so it ends with the budget
            step = max(step, int(self.budget_share() * self.schedule.schedule_steps))
        return base_lr * lr_factor(step, self.schedule.schedule_steps, self.schedule.warmup_steps,
                                   self.opts.lr_scheduler, self.opts.final_lr_ratio)

    # the loop ------------------------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset) -> tuple[DataLoader, ResumableSampler]:
        """Batches of ``dataset`` by its own ``collate`` when it has one (codes), else ``collate_skip_bad``."""
        sampler = ResumableSampler(len(dataset), rank=self.info.rank, world_size=self.info.world_size,
                                   seed=self.opts.global_seed, shuffle=True)
        g = torch.Generator().manual_seed(self.opts.global_seed)  # worker seeds drawn here, not from the global RNG
        loader = DataLoader(dataset, batch_size=self.micro_batch, sampler=sampler, drop_last=True,
                            num_workers=self.opts.num_workers, collate_fn=getattr(dataset, "collate", collate_skip_bad),
                            generator=g,
                            pin_memory=self.device.type == "cuda", persistent_workers=False)
        return loader, sampler

    def _micro_batches(self, loader: DataLoader, sampler: ResumableSampler, dataset: Dataset) -> Iterator[list[Batch]]:
        A = self.opts.gradient_accumulation_steps
        while True:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(self.epoch)
            whole_epoch = self.micro_in_epoch == 0
            sampler.set_epoch(self.epoch, self.micro_in_epoch * self.micro_batch)
            group: list[Batch] = []
            readable, first_bad = 0, None
            for batch in loader:
                self.micro_in_epoch += 1
                if batch.bad:
                    first_bad = first_bad or batch.bad[0]
                    for item in batch.bad:
                        self.bad_files.append(item.path)
                        self.log.line(f"skipped unreadable file {printable(item.path)}: {printable(item.reason)}")
                if len(batch):
                    group.append(batch)
                    readable += len(batch)
                if self.micro_in_epoch % A == 0:
                    yield group  # empty when nothing of it was readable: every process yields in step (_one_step)
                    group = []
            # another epoch would find nothing either: stop instead of spinning. Decided together, so that every
            # process stops (one process's share alone may be unreadable)
            empty = all_reduce_(torch.tensor([0.0 if readable else 1.0], device=self.device), "max").item()
            if whole_epoch and empty:
                where = getattr(dataset, "root", None) or getattr(dataset, "path", "the training set")
                example = f", e.g. {printable(first_bad.path)}: {printable(first_bad.reason)}" if first_bad else ""
                share = (f"{len(sampler)} of process {self.info.rank}'s share skipped{example}" if not readable
                         else "in another process's share") if self.info.world_size > 1 \
                    else f"{len(dataset)} skipped{example}"
                raise TrainingError(f"{printable(str(where))}: not one training item could be read in a whole epoch "
                                    f"({share}); fix or replace the files")
            self.epoch += 1
            self.micro_in_epoch = 0

    def _save(self) -> None:
        models = self.model_states()
        bad = _nonfinite_keys(models)
        if bad:
            raise TrainingError(f"refusing to write a checkpoint at step {self.step}: non-finite values in "
                                f"{', '.join(bad[:3])}; resume from the last good checkpoint with a lower lr")
        state = {"format": TRAIN_FORMAT, "kind": self.kind, "step": self.step, "epoch": self.epoch,
                 "micro_in_epoch": self.micro_in_epoch, "nonfinite_total": self.nonfinite_total,
                 "best_value": self.best_value, "bad_files": self.bad_files[-1000:],
                 "models": models, "rng": all_gather_object(rng_state()),  # one per process
                 "scalers": {k: s.state_dict() for k, s in self.scalers.items()}, **self.run_config()}
        if self.info.is_main:
            self.ckpts.save(self.step, state)
            with rng_preserved():  # the state above is what a resumed run continues from: draw nothing after it
                self.export(self.model_dir)

    def _resume(self) -> None:
        state = load_train_state(self.resume_path)
        if state.get("kind") != self.kind:
            raise TrainingError(f"{self.resume_path} is a {state.get('kind')} training checkpoint, not a {self.kind} one")
        theirs, ours = state.get("model"), self.model_config.to_dict()
        if isinstance(theirs, dict) and theirs != ours:
            diff = [f"{k} {theirs.get(k)!r} -> {ours.get(k)!r}" for k in sorted(set(theirs) | set(ours))
                    if theirs.get(k) != ours.get(k)]
            raise TrainingError(f"{self.resume_path}: the model configuration differs from the checkpoint's "
                                f"({'; '.join(diff[:4])}); resume with the run's own settings or start a new run")
        try:
            self.load_model_states(state["models"])
        except (RuntimeError, KeyError, ValueError) as e:
            if isinstance(e, TrainingError):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TrainingError(f"{self.resume_path}: the checkpoint does not fit this run ({first[:300]}); resume "
                                "with the run's own settings or start a new run") from None
        for k, s in state.get("scalers", {}).items():
            if self.scaler(k):
                self.scalers[k].load_state_dict(s)
        self.step, self.epoch, self.micro_in_epoch = state["step"], state["epoch"], state["micro_in_epoch"]
        self.nonfinite_total, self.best_value = state["nonfinite_total"], state["best_value"]
        self.bad_files = list(state.get("bad_files", []))
        rngs = state["rng"]
        if len(rngs) != self.info.world_size:
            self.log.line(f"the checkpoint was written by {len(rngs)} process(es), this run has "
                          f"{self.info.world_size}: random streams restart from the checkpoint's first one")
        set_rng_state(rngs[self.info.rank % len(rngs)])
        self.log.line(f"resumed from {self.resume_path} at step {self.step} (epoch {self.epoch})")

    def check_validation_data(self) -> None:
        """Hook: find validation-data problems (missing folder, foreign classes) before the first step."""

    def _validate_and_keep_best(self) -> dict[str, float]:
        metrics = self.validate()
        if not metrics:
            return metrics
        self.log.scalars(metrics, self.step, prefix="val")
        self.log.line(f"step {self.step} validation: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        name, higher = self.best_metric
        value = metrics.get(name)
        if self.opts.save_best and value is not None and math.isfinite(value):
            better = self.best_value is None or (value > self.best_value if higher else value < self.best_value)
            if better:
                self.best_value = value
                if self.info.is_main:
                    with rng_preserved():
                        self.export(self.out / "best")
                    self.log.line(f"new best {name} {value:.4g}: {self.out / 'best'}")
        return metrics

    def fit(self) -> dict[str, Any]:
        """Train to ``max_steps`` / ``epochs``; returns a summary (steps, images/s, last validation, skips)."""
        torch.manual_seed(self.opts.global_seed)  # the same initial weights in every process
        if self.info.is_main:
            for p in remove_stale_temporaries(self.out):
                self.log.line(f"removed {printable(str(p))}, left by an interrupted write")
        dataset = self.train_dataset()
        if self.opts.val_every:
            self.check_validation_data()
        loader, sampler = self._loader(dataset)
        A = self.opts.gradient_accumulation_steps
        if len(loader) // A == 0:
            raise TrainingError(f"the training set ({len(dataset)} images) is smaller than one step of "
                                f"{self.opts.global_batch_size} images; lower global_batch_size")
        self.schedule = schedule = Schedule.of(self.opts, len(loader) // A)
        self.build(schedule)
        torch.manual_seed(self.opts.global_seed + self.info.rank)  # each process its own dropout draws
        if self.resume_path:
            self._resume()
        self.log.line(f"training {self.kind}: {schedule.total_steps} steps of {self.opts.global_batch_size} images "
                      f"({schedule.steps_per_epoch} steps per epoch, {self.info.world_size} process(es), micro-batch "
                      f"{self.micro_batch} x {A} accumulation) on {self.device}")
        bar = tqdm(total=schedule.total_steps, initial=self.step, disable=not self.show_progress, desc=f"train {self.kind}",
                   dynamic_ncols=True)
        t0, last_val = time.time(), {}
        self._t_start, self._images, self._logs = t0, 0, {}
        start_step = self.step
        batches = self._micro_batches(loader, sampler, dataset)
        stop, self.stopped_by_budget = {}, False
        with stop_signals_noted(stop):
            while self.step < schedule.total_steps:
                signum = float(stop.get("signum", 0))
                over = 1.0 if self.opts.time_budget_minutes and self.budget_share() >= 1.0 else 0.0
                flags = all_reduce_(torch.tensor([signum, over], device=self.device), "max")  # all stop together
                if flags[0] > 0:
                    self._stop_for_signal(int(flags[0]), bar)
                if flags[1] > 0:
                    self.log.line(f"time budget of {self.opts.time_budget_minutes} min reached at step {self.step}")
                    self.stopped_by_budget = True
                    break
                if self._one_step(batches, bar):
                    break
        bar.close()
        seconds = time.time() - t0
        if self.opts.val_every:
            last_val = self._validate_and_keep_best()
        self._save()
        summary = {"steps": self.step, "seconds": seconds, "images_per_s": self._images / max(seconds, 1e-9),
                   "nonfinite_skipped": self.nonfinite_total, "bad_files": len(self.bad_files),
                   "stopped_by_budget": self.stopped_by_budget,
                   "last_train": self._logs, "last_val": last_val, "out": str(self.out),
                   "best": str(self.out / "best") if (self.out / "best" / "config.json").is_file() else None}
        self.log.line(f"done: {summary}")
        self.log.close()
        if stop.get("signum"):  # noted during the last step, after the loop's last look: the run is complete and
            signal.raise_signal(int(stop["signum"]))  # saved; the signal now acts as the caller's handler says
        ran = self.step - start_step
        if ran and self.nonfinite_total > MAX_NONFINITE_SHARE * self.step:
            raise TrainingError(f"{self.nonfinite_total} of {self.step} steps were skipped as non-finite, so the "
                                f"model in {printable(str(self.model_dir))} is barely trained; lower lr, set "
                                "max_grad_norm, or use mixed_precision none/bf16")
        return summary

    def _stop_for_signal(self, signum: int, bar) -> None:
        """Write a resumable checkpoint of the current step, then raise ``Interrupted``."""
        bar.close()
        name = signal.Signals(signum).name if signum in iter(signal.Signals) else f"signal {signum}"
        self._save()
        where = self.ckpts.path(self.step)
        self.log.line(f"{name} at step {self.step}: saved {where}; continue with --resume auto")
        self.log.close()
        raise Interrupted(f"stopped by {name} at step {self.step}; checkpoint {printable(str(where))} written, "
                          "continue with --resume auto", signum, kind=self.kind, step=self.step, checkpoint=where)

    def _one_step(self, batches, bar) -> bool:
        """One optimizer step, its logging, validation and checkpoint; True when the run has reached its end."""
        micro = next(batches)
        # a group with no readable item in some process: all processes skip it together (a step needs all of them)
        if all_reduce_(torch.tensor([0.0 if micro else 1.0], device=self.device), "max").item():
            return False
        self._logs = logs = self.train_step(micro)
        self._images += sum(len(b) for b in micro) * self.info.world_size
        self.step += 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.3g}" for k, v in list(logs.items())[:4]}, refresh=False)
        if self.step % self.opts.log_every == 0 or self.step == self.schedule.total_steps:
            rate = self._images / max(time.time() - self._t_start, 1e-9)
            self.log.scalars({**logs, "images_per_s": rate, "nonfinite_total": self.nonfinite_total}, self.step)
            self.history.append({"step": self.step, **logs})
        if self.step == self.schedule.total_steps:
            return True
        if self.opts.val_every and self.step % self.opts.val_every == 0:
            self._validate_and_keep_best()
        if self.step % self.opts.ckpt_every == 0:
            self._save()
        return False
