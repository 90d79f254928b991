"""The generator's transformer pieces: the KV cache, attention, AdaLN blocks and the AdaLN before the head.

``AdaLNSelfAttn`` is one block (self-attention and MLP, each modulated by the class condition); ``compiled_block_step``
is its forward compiled once per process for ``Generator.generate(compile=True)``. Shape suffixes as in
``generator.py``: ``B`` batch, ``L`` all tokens, ``l`` one scale's tokens, ``C`` width, ``H`` heads, ``c`` head size.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from .quantizer import _identity


class KVCache:
    """Keys/values of the scales seen so far, written into one preallocated (B, H, L, c) buffer."""

    def __init__(self, max_len: int):
        self.max_len, self.n, self.k, self.v = max_len, 0, None, None

    def append(self, k_BHlc: torch.Tensor, v_BHlc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k is None:
            B, H, _, c = k_BHlc.shape
            self.k = k_BHlc.new_empty(B, H, self.max_len, c)
            self.v = v_BHlc.new_empty(B, H, self.max_len, c)
        l = k_BHlc.shape[2]
        self.k[:, :, self.n:self.n + l] = k_BHlc
        self.v[:, :, self.n:self.n + l] = v_BHlc
        self.n += l
        return self.k[:, :, :self.n], self.v[:, :, :self.n]


def attention(q_BHLc: torch.Tensor, k_BHlc: torch.Tensor, v_BHlc: torch.Tensor, bias: torch.Tensor | None,
              scale: float, dropout_p: float) -> torch.Tensor:
    """softmax(q k^T scale + bias) v, (B, H, L, c). On a CPU with autograd recording it is spelled out instead of
    PyTorch's fused kernel, whose CPU backward (flash) ran about 12x slower than its forward: 39% of a compiled bf16
    training step of the demo's generator. Spelled out, ``torch.compile`` fuses the softmax and the step runs 1.49x
    faster (BENCHMARKS.md); sampling and evaluation keep the fused kernel (and its bit-exact references)."""
    if q_BHLc.device.type != "cpu" or not torch.is_grad_enabled():
        return F.scaled_dot_product_attention(q_BHLc, k_BHlc, v_BHlc, attn_mask=bias, scale=scale, dropout_p=dropout_p)
    a_BHLl = torch.matmul(q_BHLc * scale, k_BHlc.transpose(-2, -1))
    if bias is not None:
        a_BHLl = a_BHLl + bias
    a_BHLl = a_BHLl.float().softmax(-1).to(v_BHlc.dtype)  # in fp32 under autocast, as the fused kernel does
    if dropout_p > 0:
        a_BHLl = F.dropout(a_BHLl, dropout_p)
    return torch.matmul(a_BHLl, v_BHlc)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float, l2_norm: bool):
        super().__init__()
        self.num_heads, self.head_dim, self.l2_norm = num_heads, dim // num_heads, l2_norm
        self.mat_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        if l2_norm:  # cosine attention with a learned per-head temperature, capped at 100
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()

    def forward(self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, c)
        if self.l2_norm:
            q = F.normalize(q, dim=-1).mul(self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp())
            k = F.normalize(k, dim=-1)
        if cache is not None:
            k, v = cache.append(k, v)
        if attn_bias is not None:
            attn_bias = attn_bias.to(q.dtype)
        out = attention(q, k, v, attn_bias, self.scale, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, L, C)))


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class AdaLNSelfAttn(nn.Module):
    """x += attn(LN(x)(1 + scale1) + shift1) gamma1;  x += ffn(LN(x)(1 + scale2) + shift2) gamma2."""

    def __init__(self, C: int, D: int, num_heads: int, mlp_ratio: float, norm_eps: float, drop: float,
                 attn_drop: float, drop_path: float, attn_l2_norm: bool):
        super().__init__()
        self.C = C
        self.attn = SelfAttention(C, num_heads, attn_drop, drop, attn_l2_norm)
        self.ffn = FFN(C, round(C * mlp_ratio), drop)
        self.ln_wo_grad = nn.LayerNorm(C, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * C))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def modulation(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """(B, 1, 6, C): gamma1, gamma2, scale1, scale2, shift1, shift2; constant over a whole sample."""
        return self.ada_lin(cond_BD).view(-1, 1, 6, self.C)

    def forward(self, x: torch.Tensor, mod_B16C: torch.Tensor, attn_bias: torch.Tensor | None,
                cache: KVCache | None = None) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mod_B16C.unbind(2)
        # outside training drop path is the identity; not reading the module then keeps the blocks alike to
        # torch.compile (blocks differ only in their DropPath rates), so one compiled step serves them all
        drop = self.drop_path if self.training else _identity
        x = x + drop(self.attn(self.ln_wo_grad(x).mul(scale1.add(1)).add(shift1), attn_bias, cache).mul(gamma1))
        x = x + drop(self.ffn(self.ln_wo_grad(x).mul(scale2.add(1)).add(shift2)).mul(gamma2))
        return x


@functools.cache
def compiled_block_step():
    """``AdaLNSelfAttn.forward`` compiled (``torch.compile``, static shapes), made once per process: one graph per
    scale and batch size, shared by all blocks of all generators of one shape (the KV cache's position is part of
    the graph). Compiling VAR d16's 10 scales takes 45-100 s on a 2-core CPU the first time."""
    return torch.compile(AdaLNSelfAttn.forward, dynamic=False)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, C: int, D: int, norm_eps: float):
        super().__init__()
        self.C = C
        self.ln_wo_grad = nn.LayerNorm(C, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * C))

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x_BLC).mul(scale.add(1)).add_(shift)
