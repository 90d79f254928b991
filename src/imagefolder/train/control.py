"""How a training run stops and what it must not disturb: its errors (``TrainingError``, ``Interrupted``),
SIGTERM / SIGINT turned into a checkpoint-and-stop flag, and blocks that draw no random numbers of the run's.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

from .state import rng_state, set_rng_state


class TrainingError(RuntimeError):
    """A run cannot go on (e.g. it keeps producing non-finite losses); the message says why and what to change."""


class Interrupted(TrainingError):
    """SIGTERM / SIGINT arrived during training; a resumable checkpoint was written first. ``signame``, ``kind``
    (what was trained), ``step`` and ``checkpoint`` let a caller that runs trainers as stages (demo, ablate) say
    what continuing means there."""

    def __init__(self, message: str, signum: int, *, kind: str = "model", step: int = 0,
                 checkpoint: Path | None = None):
        super().__init__(message)
        self.signum, self.kind, self.step, self.checkpoint = signum, kind, step, checkpoint
        self.signame = signal.Signals(signum).name if signum in iter(signal.Signals) else f"signal {signum}"


@contextlib.contextmanager
def rng_preserved():
    """Run a block (e.g. building a model to export) without moving any random stream the training draws from."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


@contextlib.contextmanager
def stop_signals_noted(flag: dict):
    """While training, SIGTERM and SIGINT only set ``flag['signum']``; the loop saves a checkpoint and stops.
    A second signal of the same kind acts as usual (a stuck run can still be killed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def note(signum, frame):
        if flag.get("signum") == signum:  # the second one: give up waiting for the step to end
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
            return
        flag["signum"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, note)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
