"""Multi-scale residual quantizer (one branch of the product quantizer).

For each scale side ``pn`` (small to large) the residual is area-downsampled to pn x pn, each position picks the
code with the highest cosine similarity (ImageFolder, ``l2_norm``) or the nearest one in Euclidean distance (VAR's
tokenizer), the raw code vectors are bicubic-upsampled back to the latent grid (all
but the last scale), mixed by a phi conv, added to the reconstruction f_hat and subtracted from the residual.

Pattern scales (``pattern_scales`` > 0, our option; the papers have none): each of the first scales has its own
codebook of whole latent patches (C, p, p) with p = H / pn. A position picks the patch nearest (L2) to its cell of
the residual, not to the cell's mean, and the patch is placed as it is (no interpolation) before the phi conv. A
1 x 1 pattern scale is one code that stands for a whole latent picture, so a generator's first draw can decide
things that interpolated coarse codes cannot draw, such as the orientation of stripes (docs/DESIGN.md). Like
k-means centres they start from residual patches of the first training batch, and a code unused for a while is
moved onto a residual patch of the current batch (the same one in every process).

Latent perturbation (``perturb`` > 0, training only; RobusTok's sampling-error synthesis, not in ImageFolder): at
every scale a share ``perturb`` of the positions takes, instead of its nearest code, one drawn uniformly from its
next ``perturb_topk - 1`` nearest, and the later scales quantize what that leaves, as they do after a generator's
draw. The decoder learns to paint through the near-miss codes a generator draws, and the encoder to put what the
picture needs where such misses do not erase it. Encoding and inference are unchanged.

Glossary: ``B`` batch, ``C`` code vector size (codebook_embed_dim), ``V`` codebook size, ``K`` number of scales,
``H = W`` latent grid side, ``pn`` side of one scale, ``l = pn*pn`` codes of one scale, ``N`` flattened positions,
``p`` side of a pattern scale's patch, ``D = C*p*p`` its size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# upkeep of pattern codebooks: after RESTART_AFTER usage updates, every RESTART_EVERY, codes whose hit EMA is under
# DEAD_SHARE of the scale's mean (unused for about 200 updates at the 0.99 momentum) move onto residual patches
RESTART_AFTER, RESTART_EVERY, DEAD_SHARE = 100, 25, 0.02


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _nearest(z_NC: torch.Tensor, table_VC: torch.Tensor) -> torch.Tensor:
    """Index of the nearest row of ``table`` (Euclidean) for each row of ``z``: |z|^2 + |e|^2 - 2 z.e in VAR's
    order of operations (a tie resolves as in its quantizer)."""
    d_NV = z_NC.square().sum(dim=1, keepdim=True) + table_VC.square().sum(dim=1)
    return torch.argmin(d_NV.addmm_(z_NC, table_VC.T, alpha=-2, beta=1), dim=1)


class Phi(nn.Conv2d):
    """phi(h) = (1 - r) h + r conv3x3(h): smooths an upsampled scale before it is added to f_hat."""

    def __init__(self, dim: int, resi_ratio: float):
        super().__init__(dim, dim, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(resi_ratio)

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw.mul(1 - self.resi_ratio) + super().forward(h_BChw).mul_(self.resi_ratio)


class PhiSchedule(nn.Module):
    """``count`` phi convs shared over K scales: scale si uses the conv whose tick is nearest to si / (K - 1)."""

    def __init__(self, dim: int, count: int, resi_ratio: float):
        super().__init__()
        make = (lambda: Phi(dim, resi_ratio)) if abs(resi_ratio) > 1e-6 else nn.Identity
        self.qresi_ls = nn.ModuleList([make() for _ in range(count)])
        lo = 1 / 3 / count if count == 4 else 1 / 2 / count
        # the official tick placement, computed exactly as numpy does: scales 2 and 7 of 10 sit on exact ties
        # between two ticks, and the rounding of these floats decides which conv they use
        self.ticks = np.linspace(lo, 1 - lo, count)

    def index(self, si: int, num_scales: int) -> int:
        at = si / (num_scales - 1) if num_scales > 1 else 0.0
        return int(np.argmin(np.abs(self.ticks - at)))

    def forward(self, h_BChw: torch.Tensor, si: int, num_scales: int) -> torch.Tensor:
        return self.qresi_ls[self.index(si, num_scales)](h_BChw)


@dataclass
class QuantizerTrainOutput:
    f_hat: torch.Tensor          # (B, C, H, W): quantized values, gradient straight through to the input
    codebook_loss: torch.Tensor  # scalar: ||f_hat - sg(f)||^2, trains codebook and phi; mean over kept scales
    commit_loss: torch.Tensor    # scalar: beta ||sg(f_hat) - f||^2, pulls the encoder to its codes
    hits_KV: torch.Tensor        # (K, V): how often each code was picked at each scale in this batch

    @property
    def vq_loss(self) -> torch.Tensor:
        """The official ``mean_vq_loss``: commitment + codebook terms."""
        return self.codebook_loss + self.commit_loss


class MultiScaleQuantizer(nn.Module):
    def __init__(self, codebook_size: int, dim: int, v_patch_nums: tuple[int, ...], *,
                 share_quant_resi: int = 4, quant_resi: float = 0.5, beta: float = 0.25, l2_norm: bool = True,
                 pattern_scales: int = 0, perturb: float = 0.0, perturb_topk: int = 8):
        super().__init__()
        if perturb and not 2 <= perturb_topk <= codebook_size:
            raise ValueError(f"perturb_topk must be in [2, {codebook_size}], got {perturb_topk}")
        self.perturb, self.perturb_topk = perturb, perturb_topk
        self.codebook_size, self.dim, self.beta, self.l2_norm = codebook_size, dim, beta, l2_norm
        self.v_patch_nums = tuple(v_patch_nums)
        self.side = self.v_patch_nums[-1]
        num_phi = len(self.v_patch_nums) if share_quant_resi == 0 else share_quant_resi
        self.quant_resi = PhiSchedule(dim, num_phi, quant_resi)
        self.embedding = nn.Embedding(codebook_size, dim)
        with torch.no_grad():  # official init: uniform(-1/V, 1/V), then unit length for the cosine lookup
            self.embedding.weight.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
            if l2_norm:
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        self.pattern_scales = pattern_scales
        if not 0 <= pattern_scales <= len(self.v_patch_nums) or any(
                self.side % pn for pn in self.v_patch_nums[:pattern_scales]):
            raise ValueError(f"pattern_scales {pattern_scales}: the first pattern_scales sides of {self.v_patch_nums} "
                             f"must divide the latent grid {self.side}")
        self.patterns = nn.ParameterList([  # (V, D): filled from data on the first training batch
            nn.Parameter(torch.zeros(codebook_size, dim * (self.side // pn) ** 2))
            for pn in self.v_patch_nums[:pattern_scales]])
        if pattern_scales:  # 1 once a pattern codebook was filled (a resumed run must not fill it again)
            self.register_buffer("patterns_ready", torch.zeros(pattern_scales))
        # exponential moving average of code hits per scale (metrics.codebook.recent_usage); in the official state dict
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.v_patch_nums), codebook_size))
        self.usage_updates = 0

    @property
    def num_scales(self) -> int:
        return len(self.v_patch_nums)

    # building blocks ---------------------------------------------------------------------------------------
    def search_codebook(self) -> torch.Tensor:
        """The codebook as ``lookup`` compares against it (unit rows for the cosine lookup), without gradient."""
        weight = self.embedding.weight.detach()
        return F.normalize(weight, dim=-1) if self.l2_norm else weight

    def lookup(self, z_NC: torch.Tensor, codebook_VC: torch.Tensor | None = None) -> torch.Tensor:
        """Index of the most cosine-similar code (``l2_norm``) or of the nearest code for each row."""
        if codebook_VC is None:
            codebook_VC = self.search_codebook()
        if self.l2_norm:
            return torch.argmax(F.normalize(z_NC, dim=-1) @ codebook_VC.T, dim=1)
        return _nearest(z_NC, codebook_VC)

    def code_table(self, si: int) -> torch.Tensor:
        """The vectors the codes of scale ``si`` stand for: the codebook (V, C), or a pattern scale's (V, D)."""
        return self.patterns[si] if si < self.pattern_scales else self.embedding.weight

    def contribution(self, si: int, idx_Bl: torch.Tensor, vectors_BlC: torch.Tensor | None = None) -> torch.Tensor:
        """What the codes of scale ``si`` add to f_hat: phi(bicubic_up(codebook[idx])) as (B, C, H, W), or for a
        pattern scale phi(the patches placed in their cells). ``vectors_BlC`` replaces the codes' vectors
        code_table(si)[idx] (a soft mixture of codes, VAR's more_smooth)."""
        pn = self.v_patch_nums[si]
        if vectors_BlC is None:
            vectors_BlC = F.embedding(idx_Bl, self.code_table(si))
        if si < self.pattern_scales:
            p = self.side // pn
            h_BChw = vectors_BlC.reshape(-1, pn, pn, self.dim, p, p).permute(0, 3, 1, 4, 2, 5)
            return self.quant_resi(h_BChw.reshape(-1, self.dim, self.side, self.side), si, self.num_scales)
        h_BChw = vectors_BlC.reshape(-1, pn, pn, self.dim).permute(0, 3, 1, 2)
        if si != self.num_scales - 1:
            h_BChw = F.interpolate(h_BChw, size=(self.side, self.side), mode="bicubic")
        return self.quant_resi(h_BChw.contiguous(), si, self.num_scales)

    def _patch_rows(self, f_rest: torch.Tensor, si: int) -> torch.Tensor:
        """The residual cut into the cells of pattern scale si: (B*l, D), rows in the order of the codes."""
        pn = self.v_patch_nums[si]
        p = self.side // pn
        return f_rest.reshape(-1, self.dim, pn, p, pn, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, self.dim * p * p)

    def _pick(self, f_rest: torch.Tensor, si: int, codebook_VC: torch.Tensor) -> torch.Tensor:
        """The code of every position of scale si (B*l,): the nearest patch, or ``lookup`` of the cell mean."""
        if si >= self.pattern_scales:
            return self.lookup(self._residual_rows(f_rest, si), codebook_VC)
        return _nearest(self._patch_rows(f_rest, si), self.patterns[si].detach())

    @torch.no_grad()
    def _pick_perturbed(self, f_rest: torch.Tensor, si: int, codebook_VC: torch.Tensor) -> torch.Tensor:
        """``_pick`` with a share ``perturb`` of the positions moved to one of their next ``perturb_topk - 1``
        nearest codes (drawn uniformly, from the global random stream); one scoring serves both."""
        if si < self.pattern_scales:
            rows, table = self._patch_rows(f_rest, si), self.patterns[si].detach()
            score_NV = -torch.cdist(rows, table)
        else:
            rows, table = self._residual_rows(f_rest, si), codebook_VC
            score_NV = F.normalize(rows, dim=-1) @ table.T if self.l2_norm else -torch.cdist(rows, table)
        near_Nk = score_NV.topk(self.perturb_topk, dim=1).indices
        N, dev = near_Nk.shape[0], near_Nk.device
        other_N = near_Nk.gather(1, torch.randint(1, self.perturb_topk, (N, 1), device=dev)).squeeze(1)
        return torch.where(torch.rand(N, device=dev) < self.perturb, other_N, near_Nk[:, 0])

    @torch.no_grad()
    def _tend_patterns(self, f_rest: torch.Tensor, si: int, gather_fn) -> None:
        """Fill pattern scale si's codebook from residual patches on the first training batch; later, every
        RESTART_EVERY usage updates, move codes the usage EMA calls dead onto patches of this batch. ``gather_fn``
        gives every process all processes' patches, and the choice is drawn from a generator seeded by the step,
        so the replicas stay identical."""
        ready = bool(self.patterns_ready[si])
        if ready and (self.usage_updates < RESTART_AFTER or self.usage_updates % RESTART_EVERY):
            return
        atoms_VD = self.patterns[si]
        if ready:
            hits_V = self.ema_vocab_hit_SV[si]
            dead_V = hits_V < DEAD_SHARE * hits_V.mean()
            if not dead_V.any():
                return
        rows_ND = gather_fn(self._patch_rows(f_rest, si).float())
        g = torch.Generator().manual_seed(self.usage_updates * 1_000_003 + si)
        n = atoms_VD.shape[0] if not ready else int(dead_V.sum())
        pick = torch.randint(0, rows_ND.shape[0], (n,), generator=g).to(rows_ND.device)
        jitter = torch.randn(n, rows_ND.shape[1], generator=g).to(rows_ND) * ((0.05 if ready else 0.1) * rows_ND.std())
        if ready:
            atoms_VD[dead_V] = rows_ND[pick] + jitter
        else:
            atoms_VD.copy_(rows_ND[pick] + jitter)
            self.patterns_ready[si] = 1

    def _residual_rows(self, f_rest: torch.Tensor, si: int) -> torch.Tensor:
        pn = self.v_patch_nums[si]
        if pn != f_rest.shape[-1]:
            f_rest = F.interpolate(f_rest, size=(pn, pn), mode="area")
        return f_rest.permute(0, 2, 3, 1).reshape(-1, self.dim)

    # inference ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, f_BChw: torch.Tensor, *, return_fhats: bool = False):
        """Codes per scale (list of (B, l) int64) and, if asked, the cumulative f_hat after each scale.

        The residual is kept in float32 under autocast too (as in VAR's quantizer), so that the Euclidean search's
        in-place distance update never mixes a bf16 residual with the fp32 codebook."""
        self._check_input(f_BChw)
        f_BChw = f_BChw.float()
        B = f_BChw.shape[0]
        codebook_VC = self.search_codebook()
        f_rest, f_hat = f_BChw.clone(), torch.zeros_like(f_BChw)
        codes, fhats = [], []
        for si, pn in enumerate(self.v_patch_nums):
            idx_Bl = self._pick(f_rest, si, codebook_VC).view(B, pn * pn)
            h_BCHW = self.contribution(si, idx_Bl)
            f_hat.add_(h_BCHW)
            f_rest.sub_(h_BCHW)
            codes.append(idx_Bl)
            if return_fhats:
                fhats.append(f_hat.clone())
        return (codes, fhats) if return_fhats else codes

    def codes_to_fhats(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Cumulative f_hat (B, C, H, W) after each of the given scales (a prefix of all scales is allowed)."""
        self._check_codes(codes)
        fhats, f_hat = [], None
        for si, idx_Bl in enumerate(codes):
            h_BCHW = self.contribution(si, idx_Bl)
            f_hat = h_BCHW if f_hat is None else f_hat + h_BCHW
            fhats.append(f_hat)
        return fhats

    def var_input(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input of the generator: f_hat after scale si, area-downsampled to scale si + 1.

        Returns (B, L - first_l, C), scales 1..K-1 concatenated along the token axis.
        """
        self._check_codes(codes, full=True)
        nexts, f_hat = [], None
        for si in range(self.num_scales - 1):
            h_BCHW = self.contribution(si, codes[si])
            f_hat = h_BCHW if f_hat is None else f_hat + h_BCHW
            pn_next = self.v_patch_nums[si + 1]
            nexts.append(F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").flatten(2).transpose(1, 2))
        return torch.cat(nexts, dim=1)

    # training ----------------------------------------------------------------------------------------------
    def forward(self, f_BChw: torch.Tensor, n_keep_B: torch.Tensor | None = None,
                gather_fn: Callable[[torch.Tensor], torch.Tensor] = _identity) -> QuantizerTrainOutput:
        """Quantize with gradients: codebook and phi learn from the VQ loss, the input gets a straight-through
        gradient. Sample b keeps only its first ``n_keep_B[b]`` scales (quantizer dropout); None keeps all.
        ``gather_fn`` (all-gather over processes) serves the pattern codebooks' upkeep."""
        self._check_input(f_BChw)
        f = f_BChw.float()
        B, K = f.shape[0], self.num_scales
        if n_keep_B is None:
            n_keep_B = torch.full((B,), K, device=f.device)
        f_ng = f.detach()
        f_rest, f_hat = f_ng.clone(), torch.zeros_like(f_ng)
        codebook_VC = self.search_codebook()
        hits_KV = f.new_zeros(K, self.codebook_size)
        codebook_loss, commit_loss = f.new_zeros(()), f.new_zeros(())
        for si, pn in enumerate(self.v_patch_nums):
            if si < self.pattern_scales and self.training:
                self._tend_patterns(f_rest, si, gather_fn)
            pick = self._pick_perturbed if self.perturb > 0 and self.training else self._pick
            idx_Bl = pick(f_rest, si, codebook_VC).view(B, pn * pn)
            hits_KV[si] = idx_Bl.flatten().bincount(minlength=self.codebook_size).float()
            h_BCHW = self.contribution(si, idx_Bl)
            keep_B111 = (si < n_keep_B).to(f.dtype).view(B, 1, 1, 1)
            f_hat = f_hat + h_BCHW * keep_B111
            f_rest = f_rest - h_BCHW.detach()
            kept = keep_B111.sum()
            if kept > 0:  # masked means over the samples that keep this scale
                commit_loss = commit_loss + (self.beta * (f_hat.detach() - f).square() * keep_B111).mean() * (B / kept)
                codebook_loss = codebook_loss + ((f_hat - f_ng).square() * keep_B111).mean() * (B / kept)
        return QuantizerTrainOutput(f_hat=f_hat.detach() - f_ng + f, codebook_loss=codebook_loss / K,
                                    commit_loss=commit_loss / K, hits_KV=hits_KV)

    @torch.no_grad()
    def update_usage(self, hits_KV: torch.Tensor) -> None:
        """Fold one step's (already all-reduced) code hits into the usage EMA."""
        momentum = 0.0 if self.usage_updates == 0 else (0.9 if self.usage_updates < 100 else 0.99)
        self.ema_vocab_hit_SV.mul_(momentum).add_(hits_KV.to(self.ema_vocab_hit_SV), alpha=1 - momentum)
        self.usage_updates += 1

    # validation --------------------------------------------------------------------------------------------
    def _check_input(self, f_BChw: torch.Tensor) -> None:
        if f_BChw.ndim != 4 or f_BChw.shape[1] != self.dim or f_BChw.shape[-2:] != (self.side, self.side):
            raise ValueError(f"quantizer expects (B, {self.dim}, {self.side}, {self.side}), got {tuple(f_BChw.shape)}")

    def _check_codes(self, codes: list[torch.Tensor], full: bool = False) -> None:
        if not 1 <= len(codes) <= self.num_scales or (full and len(codes) != self.num_scales):
            need = f"{self.num_scales}" if full else f"1..{self.num_scales}"
            raise ValueError(f"expected {need} scales of codes, got {len(codes)}")
        for si, idx in enumerate(codes):
            pn = self.v_patch_nums[si]
            if idx.ndim != 2 or idx.shape[1] != pn * pn:
                raise ValueError(f"codes of scale {si} must be (B, {pn * pn}), got {tuple(idx.shape)}")
