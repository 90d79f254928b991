"""Shared helpers for the benchmark scripts: wall-clock timing and a machine description."""
from __future__ import annotations

import os
import platform
import resource
import sys
import time

import torch


# CPU features that decide which kernels oneDNN / the BLAS can use (printed with every benchmark)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def pick_device(name: str) -> torch.device:
    """``--device``: auto = the GPU when torch sees one, else the CPU; cuda without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device here")
    return torch.device(name)


def best_of(fn, repeats: int = 3, warmup: int = 1, device: torch.device | None = None) -> float:
    """Minimum wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (seconds); on a GPU each run is
    timed to the end of its queued kernels."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def peak_memory(device: torch.device | None = None) -> str:
    """This process's peak resident memory (and the GPU's peak allocation when timing on one), for the report."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    text = f"peak RSS of this process {rss:.2f} GiB"
    if device is not None and device.type == "cuda":
        text += f", peak GPU memory allocated {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    return text


def status_mb(key: str) -> int:
    """A size field of /proc/self/status (Linux) in MB: "VmRSS" resident now, "VmHWM" the peak."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key + ":")).split()[1]) // 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak resident size, "VmHWM" (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine(device: torch.device | None = None) -> str:
    """CPU model, its relevant flags, cores, threads, versions; the GPU's name when timing on one."""
    cpu, flags = platform.processor() or "cpu", set()
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1] for line in lines if line.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    have = " ".join(f for f in CPU_FLAGS if f in flags) or "unknown"
    text = (f"{cpu} (flags: {have}), {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, python {platform.python_version()}")
    if device is not None and device.type == "cuda":
        text += f"; timing on {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return text
