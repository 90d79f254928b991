"""Low-precision copies of Linear and Conv2d weights, kept between calls.

Under ``torch.autocast`` every fp32 Linear weight is cast to bf16/fp16 again in each autocast region; for a 314 M
parameter generator on CPU that is about a quarter of a bf16 sampling call. ``LowPrecisionWeights.swapped`` puts
cached casts in place of the weights for the duration of a block. Autocast would have produced the same tensors,
so results are unchanged; a cached copy is rebuilt when its weight is replaced or modified in place.

Conv2d weights are cached in the channels-last layout as well: oneDNN's low-precision convolutions (AMX on recent
Xeons) run about twice as fast on channels-last weights and activations as on the default layout
(benchmarks/bench_var_sampling.py). ``channels_last_input`` gives a conv network's input that layout, which the
following convolutions, norms and upsamplings keep. Only the low-precision path changes layout; fp32 stays
bit-exact.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn


class LowPrecisionWeights:
    def __init__(self) -> None:
        self._cache: dict[int, tuple[nn.Parameter, int, nn.Parameter]] = {}

    def _copy(self, m: nn.Linear | nn.Conv2d, dtype: torch.dtype) -> nn.Parameter:
        w = m.weight
        entry = self._cache.get(id(m))
        if entry is None or entry[0] is not w or entry[1] != w._version or entry[2].dtype != dtype \
                or entry[2].device != w.device:
            layout = torch.channels_last if w.dim() == 4 else torch.contiguous_format
            copy = w.detach().to(dtype).contiguous(memory_format=layout)
            entry = (w, w._version, nn.Parameter(copy, requires_grad=False))
            self._cache[id(m)] = entry
        return entry[2]

    @contextlib.contextmanager
    def swapped(self, modules: tuple[nn.Module, ...], dtype: torch.dtype):
        """Inside the block, every fp32 ``nn.Linear`` / ``nn.Conv2d`` weight of ``modules`` is its cached ``dtype``
        copy (convolution weights channels-last)."""
        saved = []
        try:
            for m in (m for module in modules for m in module.modules()):
                if isinstance(m, (nn.Linear, nn.Conv2d)) and m.weight.dtype == torch.float32:
                    saved.append((m, m.weight))
                    m.weight = self._copy(m, dtype)
            yield
        finally:
            for m, w in saved:
                m.weight = w

    def clear(self) -> None:
        self._cache.clear()


@contextlib.contextmanager
def low_precision(modules: tuple[nn.Module, ...], dtype: torch.dtype, cache: LowPrecisionWeights):
    """float32: nothing; bfloat16/float16: autocast on the modules' device, with their Linear and Conv2d weights taken from
    ``cache`` (cast once, reused by later calls)."""
    if dtype == torch.float32:
        yield
        return
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
    device_type = next(modules[0].parameters()).device.type
    with torch.autocast(device_type=device_type, dtype=dtype), cache.swapped(modules, dtype):
        yield


def channels_last_input(x_BCHW: torch.Tensor) -> torch.Tensor:
    """``x`` in the channels-last layout under CPU/GPU autocast (the low-precision path), unchanged otherwise."""
    if torch.is_autocast_enabled(x_BCHW.device.type):
        return x_BCHW.contiguous(memory_format=torch.channels_last)
    return x_BCHW
