"""Keep freed memory in the process heap (glibc), so that sampling does not page-fault on every large tensor.

With glibc's defaults a block over the mmap threshold (at most 32 MiB, adjusted as blocks are freed) is mapped
fresh from the kernel on every allocation and unmapped when freed, so each large activation of a scale (the
d16 generator's MLP at batch 8: hundreds of MB per call) first touches zeroed pages again. ``keep_freed_memory``
raises the mmap threshold to 1 GiB and stops the heap from being trimmed, so such blocks are reused: VAR d16
sampling in fp32 at batch 8 went from 54.0 s to 42.3 s on a 2-core Xeon (BENCHMARKS.md); freed memory stays with
the process until it ends (with the tokenizer's chunked decoding the sampler's peak resident size was the same with and
without it: 4.2 GB, BENCHMARKS.md's fourth run). PyTorch's CPU tuning guide gets the same effect
by preloading jemalloc or tcmalloc; this needs nothing installed.

The ``imagefolder`` command calls it once at start; library users may call it themselves. Set
``IMAGEFOLDER_MALLOC=system`` to keep the C library's defaults. Elsewhere than glibc on Linux it does nothing.
"""
from __future__ import annotations

import ctypes
import os
import sys

ENV = "IMAGEFOLDER_MALLOC"
# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_SETTINGS = ((_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 256 << 20))


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as described above; True when the settings were applied."""
    if os.environ.get(ENV, "").strip().lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already uses
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _SETTINGS)
