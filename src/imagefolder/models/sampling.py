"""Sampling helpers: classifier-free guidance schedules, top-k / top-p filtering, per-image seeded draws.

Per-image seeding: image ``i`` of a run draws its random numbers from its own generator seeded by
``(seed, index_i)``, and consumes the same count of draws whatever the batch, so an image depends only on the seed,
its global index and its label, not on the batch size or the number of processes sampling.

Glossary: ``B`` batch, ``l`` tokens of one scale, ``V`` codebook size of one branch, ``P`` branches.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

CFG_SCHEDULES = ("linear", "constant")


def cfg_weight(cfg: float, si: int, num_scales: int, schedule: str = "linear") -> float:
    """Guidance weight t of scale si; logits = (1 + t) * cond - t * uncond.

    "linear" is the official ramp t = cfg * si / (K - 1) (no guidance at the first scale); "constant" uses cfg.
    """
    if schedule == "linear":
        return cfg * si / (num_scales - 1) if num_scales > 1 else cfg
    if schedule == "constant":
        return cfg
    raise ValueError(f"unknown cfg schedule {schedule!r}; choose one of {CFG_SCHEDULES}")


def filter_top_k_top_p(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Logits with everything outside the top-k, then outside the top-p nucleus, set to -inf (a new tensor).

    Same rule as the official sampler: ties with the k-th value are kept; the nucleus keeps the smallest set of
    highest logits whose probability reaches top_p (always at least the best one).
    """
    out = logits_BlV.float().clone()
    V = out.shape[-1]
    if 0 < top_k < V:
        kth = out.topk(top_k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
        out.masked_fill_(out < kth, -torch.inf)
    if 0 < top_p < 1:
        sorted_logits, sorted_idx = out.sort(dim=-1, descending=False)
        drop_sorted = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        drop_sorted[..., -1:] = False
        out.masked_fill_(drop_sorted.scatter(-1, sorted_idx, drop_sorted), -torch.inf)
    return out


def image_seed(seed: int, index: int) -> int:
    """A 63-bit seed for image ``index`` of a run seeded with ``seed`` (well mixed, platform independent)."""
    digest = hashlib.blake2b(f"imagefolder:{int(seed)}:{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class PerImageRNG:
    """One CPU generator per image; ``uniform(shape)`` returns (B, *shape) with row i from image i's stream."""

    def __init__(self, seed: int, indices: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(image_seed(seed, int(i))) for i in indices]

    def uniform(self, *shape: int, device: torch.device | str = "cpu") -> torch.Tensor:
        draws = torch.stack([torch.rand(*shape, generator=g, dtype=torch.float64) for g in self.generators])
        return draws.to(device)


def sample_from_probs(probs_BlV: torch.Tensor, u_Bl: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: for each row the first index whose cumulative probability exceeds u * total."""
    cdf = probs_BlV.double().cumsum(dim=-1)
    target = (u_Bl.double() * cdf[..., -1]).unsqueeze(-1)
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return idx.clamp_(max=probs_BlV.shape[-1] - 1)


def smooth_weights(filtered_BlV: torch.Tensor, u_BlV: torch.Tensor, si: int, num_scales: int) -> torch.Tensor:
    """VAR's ``more_smooth``: Gumbel-softmax weights over the codes (B, l, V), rows summing to 1.

    At scale si with r = si / (K - 1): softmax((logits * (1 + r) + g) / tau), tau = max(0.27 * (1 - 0.95 r), 0.005),
    g = -log(-log u) standard Gumbel noise from the uniforms ``u``, on the logits after top-k / top-p (so filtered
    codes get no weight). The scale then adds the weighted mean of the code vectors instead of the drawn code's
    vector: softer, smoother pictures (VAR uses it for visualisation, not for FID).
    """
    ratio = si / (num_scales - 1) if num_scales > 1 else 1.0
    tau = max(0.27 * (1 - ratio * 0.95), 0.005)
    gumbel = -(-u_BlV.double().clamp_min(1e-300).log()).log()
    return ((filtered_BlV.double() * (1 + ratio) + gumbel) / tau).softmax(dim=-1).to(filtered_BlV.dtype)


def sample_branches(logits_per_branch: list[torch.Tensor], u_BPl: torch.Tensor, *, top_k: int = 0,
                    top_p: float = 0.0, joint: bool = False, filtered_out: list | None = None) -> list[torch.Tensor]:
    """Codes for every branch from guided logits (each (B, l, V)), using uniforms u (B, P, l).

    ``filtered_out``: a list that receives each branch's logits after top-k / top-p.
    Independent (default): branch p uses u[:, p]. Joint: the official optional two-branch mode draws one sample
    from the product of the branch distributions; with one uniform per position (u[:, 0]) it picks branch 0 by
    inverse CDF and reuses the uniform's position inside the chosen bin for the next branch, which is the same
    draw without materialising the V^P joint table.
    """
    filtered = [filter_top_k_top_p(lg, top_k, top_p) for lg in logits_per_branch]
    if filtered_out is not None:  # the caller also wants the filtered logits (more_smooth)
        filtered_out.extend(filtered)
    probs = [f.softmax(dim=-1) for f in filtered]
    if not joint:
        return [sample_from_probs(p, u_BPl[:, i]) for i, p in enumerate(probs)]
    u = u_BPl[:, 0].double()
    out = []
    for p in probs:
        p = p.double()
        p = p / p.sum(dim=-1, keepdim=True)
        idx = sample_from_probs(p, u)
        cdf = p.cumsum(dim=-1)
        hi = cdf.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        width = p.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        u = ((u - (hi - width)) / width.clamp_min(1e-300)).clamp_(0.0, 1.0 - 1e-12)
        out.append(idx)
    return out
