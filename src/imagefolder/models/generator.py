"""VAR generator with folded tokens: class-conditional next-scale prediction over P product-quantized branches.

The sequence holds K scales of pn*pn positions (L in all). Position j of scale si predicts, in parallel, the code of
every branch there: the head has P*V outputs, chunk p scoring branch p's codebook. Input of scale si > 0 is the
tokenizer's cumulative f_hat after scale si - 1, area-downsampled to pn x pn, branches concatenated on channels.
Blocks are AdaLN self-attention with L2-normalised q/k and a block-causal mask (a scale sees itself and earlier
scales). Sampling runs scale by scale with a KV cache, conditional and unconditional halves in one batch.

The generator refers to its tokenizer (``tokenizer``) without owning it: the tokenizer is not a submodule, so the
generator's ``state_dict``, ``parameters`` and ``train`` / ``eval`` are its own, and the tokenizer stays frozen in
eval mode. Moving or casting the generator (``to``, ``cuda``, ``half``) moves or casts the tokenizer with it, since
sampling decodes through it. ``copy.deepcopy`` copies both; ``sharing_tokenizer`` copies the generator's weights
onto the same tokenizer.

Values: ``generate`` returns pictures in [-1, 1], the range the tokenizer encodes from and decodes to.

Glossary: ``B`` batch, ``L`` tokens over all scales, ``l`` tokens of one scale, ``C`` width, ``D`` condition width
(= C), ``H`` heads, ``c`` head size, ``V`` codebook size per branch, ``P`` branches, ``Cv = P * Cb`` input channels.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import GeneratorConfig
from .blocks import AdaLNBeforeHead, AdaLNSelfAttn, KVCache, compiled_block_step
from .editing import check_codes, keep_region, scale_keep_masks
from .lowp import LowPrecisionWeights, low_precision
from .sampling import CFG_SCHEDULES, PerImageRNG, cfg_weight, sample_branches, smooth_weights
from .tokenizer import Codes, Tokenizer
from .vit import level_ids


def scale_levels(patch_nums: tuple[int, ...], device: torch.device | str | None = None) -> torch.Tensor:
    """(1, L) int64: the scale index of every position."""
    return level_ids([pn * pn for pn in patch_nums], device)


def block_causal_mask(patch_nums: tuple[int, ...], device: torch.device | str | None = None) -> torch.Tensor:
    """(1, 1, L, L) additive mask: 0 where the key's scale <= the query's scale, else -inf."""
    level_L = scale_levels(patch_nums, device)[0]
    mask_LL = torch.where(level_L[:, None] >= level_L[None, :], 0.0, -torch.inf)
    return mask_LL.view(1, 1, len(level_L), len(level_L))


class Generator(nn.Module):
    def __init__(self, config: GeneratorConfig, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.config = c = config
        if tokenizer is None:
            tokenizer = Tokenizer(c.tokenizer)
        elif tokenizer.config != c.tokenizer:
            raise ValueError("the tokenizer's configuration differs from the generator's tokenizer configuration")
        self._tokenizer = (tokenizer.requires_grad_(False).eval(),)  # a tuple: nn.Module does not register it
        t = c.tokenizer
        self.P, self.V, self.Cv = t.product_quant, t.codebook_size, t.product_quant * t.codebook_embed_dim
        self.patch_nums = t.v_patch_nums
        self.L = sum(pn * pn for pn in self.patch_nums)
        self.first_l = self.patch_nums[0] ** 2
        self.num_classes = c.num_classes
        C = D = c.embed_dim
        init_std = math.sqrt(1 / C / 3)

        self.word_embed = nn.Linear(self.Cv, C)
        self.class_emb = nn.Embedding(c.num_classes + 1, C)  # the last row is the unconditional class
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.L, C))
        self.lvl_embed = nn.Embedding(len(self.patch_nums), C)
        for p in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, mean=0, std=init_std)
        dpr = [c.drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]  # linearly increasing
        self.blocks = nn.ModuleList([
            AdaLNSelfAttn(C, D, c.num_heads, c.mlp_ratio, c.norm_eps, c.drop_rate, c.attn_drop_rate, dpr[i],
                          c.attn_l2_norm) for i in range(c.depth)])
        self.head_nm = AdaLNBeforeHead(C, D, c.norm_eps)
        self.head = nn.Linear(C, self.P * self.V)
        if c.p_drop > 0:
            self.empty_emb = nn.Embedding(1, C)
        self._lowp = LowPrecisionWeights()
        self.init_weights()

    @property
    def tokenizer(self) -> Tokenizer:
        """The frozen tokenizer whose codes the generator predicts (a reference, not a submodule)."""
        return self._tokenizer[0]

    def _apply(self, fn, recurse: bool = True) -> "Generator":
        # to() / cuda() / half() / float(): the tokenizer follows, since sampling decodes through it
        super()._apply(fn, recurse)
        self.tokenizer._apply(fn, recurse)
        return self

    def sharing_tokenizer(self) -> "Generator":
        """A copy of the generator's weights (and train / eval mode) on the same tokenizer object; draws no random
        numbers (e.g. the EMA model a trainer evaluates)."""
        with torch.device("meta"):
            copy = Generator(self.config, self.tokenizer)
        copy.load_state_dict({k: v.detach().clone() for k, v in self.state_dict().items()}, assign=True)
        return copy.train(self.training)

    # constants derived from the scale schedule (the official model stores them as buffers) --------------------
    @property
    def lvl_1L(self) -> torch.Tensor:
        return scale_levels(self.patch_nums, self.pos_1LC.device)

    @property
    def attn_bias_for_masking(self) -> torch.Tensor:
        return block_causal_mask(self.patch_nums, self.pos_1LC.device).to(self.pos_1LC.dtype)

    # initialisation (the official VAR recipe) ----------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02,
                     init_std: float = -1.0) -> None:
        C = self.config.embed_dim
        std = math.sqrt(1 / C / 3) if init_std < 0 else init_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
        self.head.weight.mul_(init_head)
        self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        depth = len(self.blocks)
        for b in self.blocks:
            b.attn.proj.weight.div_(math.sqrt(2 * depth))
            b.ffn.fc2.weight.div_(math.sqrt(2 * depth))
            b.ada_lin[-1].weight[2 * C:].mul_(init_adaln)
            b.ada_lin[-1].weight[:2 * C].mul_(init_adaln_gamma)

    # teacher forcing -----------------------------------------------------------------------------------------
    def _head(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        dtype = self.pos_1LC.dtype  # float32 normally; the head runs in the model's dtype, outside autocast's choice
        return self.head(self.head_nm(x_BLC.to(dtype), cond_BD).to(dtype)).float()

    def forward(self, labels_B: torch.Tensor, codes: Codes | torch.Tensor) -> torch.Tensor:
        """Logits (B, L, P*V) for every scale given the ground-truth codes of the earlier scales.

        ``codes``: codes[branch][scale], or the tokenizer's ``var_input(codes)`` (B, L - first_l, P*Cb).
        In training mode labels are dropped to the unconditional class with probability cond_drop_rate, and tokens
        are masked when p_drop > 0; in eval mode neither happens.
        """
        x_in = codes if isinstance(codes, torch.Tensor) else self.tokenizer.var_input(codes)
        B = labels_B.shape[0]
        if x_in.shape != (B, self.L - self.first_l, self.Cv):
            raise ValueError(f"teacher-forcing input must be (B, {self.L - self.first_l}, {self.Cv}), "
                             f"got {tuple(x_in.shape)}")
        if self.training and self.config.cond_drop_rate > 0:
            drop = torch.rand(B, device=labels_B.device) < self.config.cond_drop_rate
            labels_B = torch.where(drop, self.num_classes, labels_B)
        cond_BD = self.class_emb(labels_B)
        sos = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, -1, -1)
        x = torch.cat((sos, self.word_embed(x_in.to(self.pos_1LC.dtype))), dim=1)
        if self.training and self.config.p_drop > 0:
            x = self._mask_tokens(x)
        x = x + (self.lvl_embed(self.lvl_1L) + self.pos_1LC)
        mask = self.attn_bias_for_masking
        for b in self.blocks:
            x = b(x, b.modulation(cond_BD), mask)
        return self._head(x, cond_BD)

    def _mask_tokens(self, x_BLC: torch.Tensor) -> torch.Tensor:
        """Token masking: a batch-wide rate p ~ U(0, p_drop); each non-start token is replaced with prob. p."""
        B, L, _ = x_BLC.shape
        p = torch.rand((), device=x_BLC.device) * self.config.p_drop
        masked = torch.rand(B, L, 1, device=x_BLC.device) < p
        masked[:, :self.first_l] = False
        return torch.where(masked, self.empty_emb.weight.view(1, 1, -1).to(x_BLC.dtype), x_BLC)

    # sampling ------------------------------------------------------------------------------------------------
    def _autocast(self, dtype: torch.dtype):
        return low_precision((self, self.tokenizer), dtype, self._lowp)

    def clear_low_precision_cache(self) -> None:
        """Free the bf16/fp16 weight copies kept between low-precision sampling calls."""
        self._lowp.clear()

    def _scale_by_scale(self, labels_B: torch.Tensor, choose, cfg: float, cfg_schedule: str, compile: bool = False):
        """Run the KV-cached AR loop; ``choose(si, guided_logits_per_branch)`` returns each branch's (B, l) codes,
        or (codes, vectors) with (B, l, Cb) vectors that the scale adds instead of the codes' (more_smooth).
        ``compile``: the blocks run ``compiled_block_step``. Returns the final f_hat (B, P*Cb, h, w)."""
        if cfg_schedule not in CFG_SCHEDULES:
            raise ValueError(f"unknown cfg schedule {cfg_schedule!r}; choose one of {CFG_SCHEDULES}")
        if compile:
            # one graph per scale (and per dtype and batch size seen): more than dynamo's default recompile limit
            with torch._dynamo.config.patch(recompile_limit=max(torch._dynamo.config.recompile_limit,
                                                                4 * len(self.patch_nums))):
                return self._scale_loop(labels_B, choose, cfg, cfg_schedule, compiled_block_step())
        return self._scale_loop(labels_B, choose, cfg, cfg_schedule, AdaLNSelfAttn.__call__)

    def _scale_loop(self, labels_B: torch.Tensor, choose, cfg: float, cfg_schedule: str, step):
        B, K, side = labels_B.shape[0], len(self.patch_nums), self.patch_nums[-1]
        uncond = torch.full_like(labels_B, self.num_classes)
        cond_2BD = self.class_emb(torch.cat((labels_B, uncond)))
        mods = [b.modulation(cond_2BD) for b in self.blocks]
        caches = [KVCache(self.L) for _ in self.blocks]
        lvl_pos = self.lvl_embed(self.lvl_1L) + self.pos_1LC
        x = cond_2BD.unsqueeze(1).expand(2 * B, self.first_l, -1) + self.pos_start.expand(2 * B, -1, -1) \
            + lvl_pos[:, :self.first_l]
        f_hat = None
        cur = 0
        for si, pn in enumerate(self.patch_nums):
            cur += pn * pn
            for b, mod, cache in zip(self.blocks, mods, caches):
                x = step(b, x, mod, None, cache)
            logits = self._head(x, cond_2BD)
            t = cfg_weight(cfg, si, K, cfg_schedule)
            guided = (1 + t) * logits[:B] - t * logits[B:]
            chosen = choose(si, list(guided.chunk(self.P, dim=-1)))
            idx, vectors = chosen if isinstance(chosen, tuple) else (chosen, None)
            h = self.tokenizer.scale_contribution(si, idx, vectors)
            f_hat = h if f_hat is None else f_hat + h
            if si < K - 1:
                pn_next = self.patch_nums[si + 1]
                nxt = F.interpolate(f_hat, size=(pn_next, pn_next), mode="area") if pn_next != side else f_hat
                x = self.word_embed(nxt.flatten(2).transpose(1, 2)) + lvl_pos[:, cur:cur + pn_next * pn_next]
                x = x.repeat(2, 1, 1)
        return f_hat

    def _labels(self, labels_B) -> torch.Tensor:
        labels_B = torch.as_tensor(labels_B, dtype=torch.long, device=self.pos_1LC.device).reshape(-1)
        if labels_B.numel() and (labels_B.min() < 0 or labels_B.max() >= self.num_classes):
            raise ValueError(f"labels must be in [0, {self.num_classes - 1}], got {labels_B.tolist()}")
        return labels_B

    @torch.no_grad()
    def generate(self, labels_B, *, cfg: float = 3.25, top_k: int = 750, top_p: float = 0.95,
                 seed: int | None = 0, indices=None, cfg_schedule: str = "linear", joint_sample: bool = False,
                 dtype: torch.dtype = torch.float32, return_codes: bool = False, prefix: Codes | None = None,
                 more_smooth: bool = False, temperature: float = 1.0, source: Codes | None = None,
                 keep_mask: torch.Tensor | None = None, compile: bool = False):
        """Class-conditional samples (B, 3, H, W) in [-1, 1] (float32), the range ``Tokenizer.decode`` returns.

        ``seed`` with ``indices`` (global image numbers, default 0..B-1) fixes each image independently of the
        batch it is sampled in. ``dtype`` bfloat16/float16 runs under autocast; float32 is exact.
        With ``return_codes`` also returns the sampled codes[branch][scale].
        ``temperature``: the guided logits are divided by it before top-k / top-p (< 1 sharper, > 1 more varied).
        ``prefix``: codes[branch][scale] of the first k scales (e.g. ``tokenizer.encode(x)`` cut to k scales) to
        keep instead of sampling them; the later scales are sampled given them, with the same random draws as
        without a prefix. k = 0 is plain sampling, k = K decodes the prefix.
        ``source`` and ``keep_mask``: editing (``editing`` module): ``source`` is a picture's codes at every scale
        (``tokenizer.encode(x)``), ``keep_mask`` (h, w) or (B, h, w) the region to keep (1 = keep; the picture's or
        the token grid's size). At every scale the positions that the mask keeps there take the picture's codes
        and the rest is sampled, for in-painting, out-painting and class edits (keep the background, give another
        class). The random draws are those of plain sampling: an empty mask is plain sampling, a full one the
        picture's reconstruction. With ``prefix`` too, its scales are kept whole.
        ``compile``: run the transformer blocks compiled (``torch.compile``, one graph per scale, made on the first
        call of each batch size and dtype: VAR d16 takes 45-100 s on a 2-core CPU). It fuses the AdaLN, GELU and
        residual passes: VAR d16 in bf16 on a 2-core Xeon, 2-15% faster in our runs (BENCHMARKS.md). For long
        sampling runs; not exact (the fused passes round differently, so codes can change), so the exact fp32 path
        is ``compile=False``.
        ``more_smooth``: VAR's Gumbel-softmax smoothing (``sampling.smooth_weights``): every sampled scale adds a
        Gumbel-softmax mixture of code vectors, not the drawn code's vector, which gives smoother pictures (VAR's
        demo option; its FID numbers are without it). The returned codes are still the drawn ones.
        """
        if not (math.isfinite(cfg) and cfg >= 0) or not 0.0 <= top_p <= 1.0 or top_k < 0:
            raise ValueError(f"sampling needs a finite cfg >= 0, top_p in [0, 1] and top_k >= 0; got cfg {cfg}, "
                             f"top_p {top_p}, top_k {top_k}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        labels_B = self._labels(labels_B)
        B = labels_B.shape[0]
        layout = (B, self.P, self.V, self.patch_nums)
        kept = 0 if prefix is None else check_codes(prefix, "prefix", *layout)
        if (source is None) != (keep_mask is None):
            raise ValueError("editing needs both source (the picture's codes) and keep_mask (the region to keep)")
        if source is not None:
            check_codes(source, "source", *layout, all_scales=True)
            keep_masks = scale_keep_masks(keep_mask, B, self.patch_nums, self.tokenizer.config.image_size)
        indices = list(range(B)) if indices is None else [int(i) for i in indices]
        if len(indices) != B:
            raise ValueError(f"got {len(indices)} indices for {B} labels")
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        rng = PerImageRNG(seed, indices)
        codes: Codes = [[] for _ in range(self.P)]

        K = len(self.patch_nums)

        def choose(si, guided):
            l, dev = guided[0].shape[1], guided[0].device
            u = rng.uniform(self.P, l, device=dev)  # drawn for kept scales too: same later draws
            u_smooth = rng.uniform(self.P, l, self.V, device=dev) if more_smooth else None
            if si < kept:
                idx = [prefix[p][si].to(u.device) for p in range(self.P)]
                for p in range(self.P):
                    codes[p].append(idx[p])
                return idx
            if temperature != 1.0:
                guided = [g / temperature for g in guided]
            filtered: list[torch.Tensor] = []
            idx = sample_branches(guided, u, top_k=top_k, top_p=top_p, joint=joint_sample, filtered_out=filtered)
            vectors = None
            if u_smooth is not None or source is not None:  # each branch's (V, D) code table at this scale
                tables = [q.code_table(si).float() for q in self.tokenizer.quantizes]
            if u_smooth is not None:
                vectors = [smooth_weights(f, u_smooth[:, p], si, K) @ emb
                           for p, (f, emb) in enumerate(zip(filtered, tables))]
            if source is not None:
                idx, vectors = keep_region(idx, vectors, [s[si] for s in source], keep_masks[si], tables)
            for p in range(self.P):
                codes[p].append(idx[p])
            return idx if vectors is None else (idx, vectors)

        with self._autocast(dtype):
            f_hat = self._scale_by_scale(labels_B, choose, cfg, cfg_schedule, compile)
            img = self.tokenizer.fhat_to_img(f_hat).float()
        return (img, codes) if return_codes else img

    @torch.no_grad()
    def guided_logits(self, labels_B, codes: Codes, *, cfg: float = 3.25, cfg_schedule: str = "linear",
                      dtype: torch.dtype = torch.float32) -> list[list[torch.Tensor]]:
        """The guided logits the sampler sees at every scale when it picks the given codes: [branch][scale] of
        (B, l, V). With cfg=0 these are the conditional logits, equal to the teacher-forced ``forward``'s."""
        labels_B = self._labels(labels_B)
        out: list[list[torch.Tensor]] = [[] for _ in range(self.P)]

        def choose(si, guided):
            for p in range(self.P):
                out[p].append(guided[p].float())
            return [codes[p][si] for p in range(self.P)]

        with self._autocast(dtype):
            self._scale_by_scale(labels_B, choose, cfg, cfg_schedule)
        return out
