"""Pre-tokenized training data: every image's codes, as is and mirrored, computed once by the tokenizer.

A codes cache is one safetensors file (written atomically) with the tensors

* ``codes``  (N, 2, P, L) int16 (int32 when V > 32767): image, flip (0 as is, 1 mirrored), branch, token (all
  scales concatenated, small to large, as ``codes_BPL`` lays them out);
* ``labels`` (N,) int64;
* ``valid``  (N,) uint8: 0 for a file that could not be read (it is skipped and reported, as on the fly);

and, in the file's metadata under ``imagefolder``, JSON: format and version, the data root, class names, the
tokenizer configuration and a fingerprint of its weights (``tokenizer_fingerprint``). A run refuses a cache
whose fingerprint differs from its tokenizer's.

``CodesDataset`` reads the codes through a memory map (no copy per process) and returns, for (index, epoch), the
flip ``flip_decision(seed, epoch, index)`` picks: the same codes a run tokenizing ``ImageFolderDataset(flip=True,
seed=seed)`` on the fly sees, so both paths train identically. Images are tokenized in float32 on both paths.

Glossary: ``N`` images, ``B`` batch, ``P`` branches, ``L`` tokens per branch over all scales, ``K`` scales.
"""
from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..checkpoint import atomic_write
from ..config import TokenizerConfig
from ..data.folder import BadItem, ImageFolderDataset, collate_codes, collate_skip_bad, flip_decision
from ..data.images import ImageError, printable
from ..models.tokenizer import Codes, Tokenizer
from .control import TrainingError

CACHE_FORMAT, CACHE_VERSION = "imagefolder-codes", 1
_NUMPY_DTYPES = {"I16": np.int16, "I32": np.int32, "I64": np.int64, "U8": np.uint8}


class CodesCacheError(TrainingError):
    """A codes cache is unreadable or does not belong to the tokenizer of the run; the message says what to do."""


# code layout -----------------------------------------------------------------------------------------------------
def codes_BPL(codes: Codes) -> torch.Tensor:
    """codes[branch][scale] (each (B, pn*pn)) -> (B, P, L), scales concatenated small to large."""
    return torch.stack([torch.cat(branch, dim=1) for branch in codes], dim=1)


def split_codes(codes_BPL_: torch.Tensor, patch_nums: tuple[int, ...]) -> Codes:
    """(B, P, L) -> codes[branch][scale] (each (B, pn*pn) int64), the inverse of ``codes_BPL``."""
    sizes = [pn * pn for pn in patch_nums]
    if codes_BPL_.shape[-1] != sum(sizes):
        raise ValueError(f"codes hold {codes_BPL_.shape[-1]} tokens per branch; the scales {patch_nums} need "
                         f"{sum(sizes)}")
    return [list(codes_BPL_[:, p].long().split(sizes, dim=1)) for p in range(codes_BPL_.shape[1])]


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """A hash of every tensor of the tokenizer's state (names, dtypes, shapes, bytes): equal weights, equal hash."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(tokenizer.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# writing -----------------------------------------------------------------------------------------------------
@torch.no_grad()
def pretokenize(tokenizer: Tokenizer, root: str | Path, out: str | Path, *, batch_size: int = 64,
                device: torch.device | str = "cpu", num_workers: int = 0, show_progress: bool = True) -> dict[str, Any]:
    """Tokenize every image under ``root`` (ImageFolder layout) as is and mirrored; write the cache to ``out``.
    Returns a summary: images, unreadable files, seconds, images/s, path."""
    cfg = tokenizer.config
    fingerprint = tokenizer_fingerprint(tokenizer)
    tokenizer = tokenizer.to(device).eval()
    data = ImageFolderDataset(root, cfg.image_size)
    index_of = {str(path): i for i, (path, _) in enumerate(data.samples)}
    N, P, L = len(data), cfg.product_quant, cfg.tokens_per_branch
    codes_N2PL = torch.zeros(N, 2, P, L, dtype=torch.int16 if cfg.codebook_size <= 32767 else torch.int32)
    valid_N = torch.ones(N, dtype=torch.uint8)
    bad: dict[str, dict[str, str]] = {}  # index -> file and reason
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_skip_bad)
    start = time.perf_counter()
    for batch in tqdm(loader, desc="pretokenize", unit="batch", disable=not show_progress):
        for item in batch.bad:
            valid_N[index_of[item.path]] = 0
            bad[str(index_of[item.path])] = {"path": item.path, "reason": item.reason}
        if not batch.images.numel():
            continue
        x = batch.images.to(device)
        both = codes_BPL(tokenizer.encode(torch.cat([x, x.flip(-1)])))  # (2B, P, L): as is, then mirrored
        codes_N2PL[batch.indices] = both.view(2, -1, P, L).transpose(0, 1).to(codes_N2PL.dtype).cpu()
    seconds = time.perf_counter() - start
    if N and len(bad) == N:
        first = next(iter(bad.values()))
        raise ImageError(f"{printable(str(root))}: none of its {N} images could be read (e.g. "
                         f"{printable(first['path'])}: {printable(first['reason'])}); no codes cache written")
    meta = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "root": str(Path(root).resolve()),
            "classes": data.classes, "num_images": N, "unreadable": bad, "tokenizer_config": cfg.to_dict(),
            "tokenizer_fingerprint": fingerprint}
    tensors = {"codes": codes_N2PL, "labels": torch.tensor(data.labels, dtype=torch.int64), "valid": valid_N}
    atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata={"imagefolder": json.dumps(meta)}))
    return {"images": N, "unreadable": len(bad), "seconds": seconds, "images_per_s": 2 * N / max(seconds, 1e-9),
            "out": str(out)}


# reading -----------------------------------------------------------------------------------------------------
def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors header (tensor table + metadata) and the byte offset where tensor data starts."""
    if not path.is_file():
        raise FileNotFoundError(f"codes cache not found: {path} (write one with imagefolder pretokenize)")
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, MemoryError, OverflowError):
        raise CodesCacheError(f"{path}: not a safetensors file (write the cache with imagefolder pretokenize)") \
            from None
    return header, 8 + n


def read_cache_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a codes cache (classes, tokenizer config and fingerprint, ...), without the codes."""
    path = Path(path)
    header, _ = _read_header(path)
    try:
        meta = json.loads(header["__metadata__"]["imagefolder"])
    except (KeyError, TypeError, json.JSONDecodeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise CodesCacheError(f"{path}: not an imagefolder codes cache (write one with imagefolder pretokenize)")
    if meta.get("version", 0) > CACHE_VERSION:
        raise CodesCacheError(f"{path}: written by a newer imagefolder (codes cache version {meta['version']})")
    return meta


def check_cache_tokenizer(path: str | Path, meta: dict[str, Any], tokenizer: Tokenizer, fingerprint: str) -> None:
    """Refuse a cache made by another tokenizer (different weights or configuration)."""
    theirs = TokenizerConfig.from_dict(meta["tokenizer_config"])
    if theirs != tokenizer.config or meta["tokenizer_fingerprint"] != fingerprint:
        what = "configuration" if theirs != tokenizer.config else "weights"
        raise CodesCacheError(
            f"{path} was made by a different tokenizer ({what} differ: its fingerprint "
            f"{meta['tokenizer_fingerprint'][:12]}, this run's tokenizer {fingerprint[:12]}); its codes would be "
            f"meaningless here. Run imagefolder pretokenize again with this tokenizer, or train with the tokenizer "
            f"that made the cache.")


class CodesDataset(Dataset):
    """Items ``(codes (P, L) int64, label, index)`` from a codes cache, or a ``BadItem`` for a file that was
    unreadable when the cache was written. ``flip``: mirrored codes where ``flip_decision(seed, epoch, index)``.
    ``collate``: batches them into ``Batch.codes``."""

    collate = staticmethod(collate_codes)

    def __init__(self, path: str | Path, *, flip: bool = False, seed: int = 0):
        self.path = Path(path)
        self.meta = read_cache_meta(self.path)
        header, self._data_start = _read_header(self.path)
        self._table = {name: header[name] for name in ("codes", "labels", "valid") if name in header}
        if len(self._table) != 3:
            raise CodesCacheError(f"{self.path}: codes cache without codes, labels or valid tensors")
        self.classes: list[str] = list(self.meta["classes"])
        self.flip, self.seed, self.epoch = flip, seed, 0
        self._arrays: dict[str, np.ndarray] = {}  # memory maps, opened in the process that reads them
        self.unreadable: dict[str, dict[str, str]] = dict(self.meta.get("unreadable", {}))
        if len(self) and not self._array("valid").any():
            raise CodesCacheError(f"{self.path}: none of its {len(self)} images was readable when it was made "
                                  f"(from {self.meta.get('root')}); fix the images and run imagefolder pretokenize again")
        self._arrays = {}  # opened again where they are read (a worker process)

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            entry = self._table[name]
            begin, _ = entry["data_offsets"]
            self._arrays[name] = np.memmap(self.path, dtype=_NUMPY_DTYPES[entry["dtype"]], mode="r",
                                           offset=self._data_start + begin, shape=tuple(entry["shape"]))
        return self._arrays[name]

    def __getstate__(self) -> dict[str, Any]:  # worker processes open their own memory maps
        return {**self.__dict__, "_arrays": {}}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return int(self._table["labels"]["shape"][0])

    @property
    def labels(self) -> list[int]:
        return self._array("labels").tolist()

    @property
    def codes_shape(self) -> tuple[int, int]:
        """(P, L) of one item."""
        _, _, P, L = self._table["codes"]["shape"]
        return P, L

    def __getitem__(self, i: int):
        if not self._array("valid")[i]:
            bad = self.unreadable.get(str(i), {"path": f"{self.path}[{i}]", "reason": "unreadable"})
            return BadItem(bad["path"], bad["reason"])  # as the image dataset reports it
        flip = int(self.flip and flip_decision(self.seed, self.epoch, i))
        codes_PL = torch.from_numpy(np.asarray(self._array("codes")[i, flip], dtype=np.int64))
        return codes_PL, int(self._array("labels")[i]), i
