"""Zero-shot editing along scales: keep a region of a picture at every scale and sample the rest (VAR's editing).

At every scale the generator samples the whole token map as usual; then the positions inside the kept region take
the picture's own codes of that scale instead, and the accumulated feature map that feeds the next scale is built
from these merged codes. The random draws are the same as without editing, so an empty mask is plain sampling and
a full mask gives back the picture's codes (its reconstruction).

How a mask reaches each scale's grid: a keep mask covers the whole (square) picture. It is (h, w) for every image
of the batch or (B, h, w) per image, bool or float in [0, 1] (1 = keep), and (h, w) is either the picture's size in
pixels or the finest token grid (one value per latent position). For a scale of pn x pn positions the mask is
area-downsampled to pn x pn (each position gets the mean of the mask over the part of the picture it covers) and a
position is kept when that mean is at least 0.5: a majority rule, so a small edited region leaves the coarse
scales to the picture and is redrawn from the scales fine enough to see it.

Glossary: ``B`` batch, ``P`` branches, ``K`` scales, ``l`` positions of one scale (pn * pn), ``V`` codebook size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .tokenizer import Codes

KEEP_THRESHOLD = 0.5  # a position is kept when at least this share of its cell is kept


def check_codes(codes: Codes, name: str, B: int, P: int, V: int, patch_nums: tuple[int, ...],
                all_scales: bool = False) -> int:
    """The number of scales ``codes`` (codes[branch][scale] of (B, pn*pn) integers) holds, after checking its
    layout against the model's; ``all_scales`` requires every scale. ValueError naming the problem otherwise."""
    if len(codes) != P:
        raise ValueError(f"{name} must hold codes of {P} branches, got {len(codes)}")
    k = len(codes[0])
    K = len(patch_nums)
    if any(len(branch) != k for branch in codes) or k > K or (all_scales and k != K):
        need = f"all {K}" if all_scales else f"at most {K}"
        raise ValueError(f"{name} must give every branch the same number of scales ({need}), got "
                         f"{[len(branch) for branch in codes]}")
    for p, branch in enumerate(codes):
        for si, idx in enumerate(branch):
            pn = patch_nums[si]
            if tuple(idx.shape) != (B, pn * pn) or idx.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"{name}[{p}][{si}] must be integer codes of shape ({B}, {pn * pn}), got "
                                 f"{idx.dtype} {tuple(idx.shape)}")
            if idx.numel() and (idx.min() < 0 or idx.max() >= V):
                raise ValueError(f"{name}[{p}][{si}] holds codes outside [0, {V - 1}]")
    return k


def scale_keep_masks(keep_mask: torch.Tensor, B: int, patch_nums: tuple[int, ...], image_size: int
                     ) -> list[torch.Tensor]:
    """The kept positions of every scale: K bool tensors (B, pn*pn), from a pixel or token-grid mask (module doc).
    ValueError in one line for a mask of another size, batch, type or range."""
    if not isinstance(keep_mask, torch.Tensor):
        raise ValueError(f"keep_mask must be a tensor, got {type(keep_mask).__name__}")
    side = patch_nums[-1]
    sizes = sorted({image_size, side})
    sizes_text = " or ".join(f"{s}x{s}" for s in sizes)
    if keep_mask.dim() not in (2, 3) or tuple(keep_mask.shape[-2:]) not in {(s, s) for s in sizes}:
        raise ValueError(f"keep_mask must be (H, W) or (B, H, W) with H x W = {sizes_text} (the picture or its "
                         f"token grid), got shape {tuple(keep_mask.shape)}")
    if keep_mask.dim() == 3 and keep_mask.shape[0] not in (1, B):
        raise ValueError(f"keep_mask holds {keep_mask.shape[0]} masks for {B} images: give one, or one per image")
    if keep_mask.dtype == torch.bool:
        mask = keep_mask.float()
    elif keep_mask.is_floating_point():
        mask = keep_mask.float()
        if not bool(((mask >= 0) & (mask <= 1)).all()):  # also refuses NaN
            raise ValueError("keep_mask values must be in [0, 1] (1 = keep the picture there)")
    else:
        raise ValueError(f"keep_mask must be bool or float in [0, 1], got {keep_mask.dtype}")
    mask_B1hw = mask.reshape(-1, 1, *mask.shape[-2:]).expand(B, 1, -1, -1)
    return [(F.adaptive_avg_pool2d(mask_B1hw, pn) >= KEEP_THRESHOLD).reshape(B, pn * pn) for pn in patch_nums]


def keep_region(idx: list[torch.Tensor], vectors: list[torch.Tensor] | None, source: list[torch.Tensor],
                keep_Bl: torch.Tensor, embeddings: list[torch.Tensor]
                ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """One scale's sampled codes (per branch (B, l)) with the kept positions replaced by the picture's ``source``
    codes; ``vectors`` (per branch (B, l, D), VAR's more_smooth mixtures) take the kept codes' own vectors there
    (``embeddings``: each branch's (V, D) code table at this scale, ``MultiScaleQuantizer.code_table``)."""
    keep_Bl = keep_Bl.to(idx[0].device)
    merged = [torch.where(keep_Bl, src.to(i.device, i.dtype), i) for i, src in zip(idx, source)]
    if vectors is None:
        return merged, None
    kept_vectors = [torch.where(keep_Bl.unsqueeze(-1), emb.to(v.dtype)[m], v)
                    for v, m, emb in zip(vectors, merged, embeddings)]
    return merged, kept_vectors
