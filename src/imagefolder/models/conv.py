"""Convolutional encoder and decoder (the authors' ``enc_type: cnn`` / ``dec_type: cnn``, a VQGAN-style network).

Encoder: ``conv_in`` 3x3, then one level per entry of ``ch_mult`` (``num_res_blocks`` residual blocks, an attention
block after each of them at the last, lowest-resolution level only, and a stride-2 downsample after every level but
the last), a middle ``[res, attn, res]``, GroupNorm, swish and ``conv_out`` 3x3 to ``z_channels``. The latent grid is
``image_size / 2 ** (len(ch_mult) - 1)`` on a side.

Decoder: the mirror image, with ``num_res_blocks + 1`` residual blocks per level and a nearest x2 upsample + conv
after every level but the finest. Attribute names are the official parameter names (``conv_blocks.0.res.1.norm2``,
``mid.1.proj_out``, ...), so official checkpoints load without renaming.

Glossary: ``B`` batch, ``C`` channels, ``H W`` image side, ``h w`` latent grid side.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NORM_GROUPS = 32  # GroupNorm groups in every block, as in the authors' (and VQGAN's) networks


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(NORM_GROUPS, channels, eps=1e-6, affine=True)


def swish(x_BCHW: torch.Tensor) -> torch.Tensor:
    """SiLU of a norm's fresh output: in place when no gradient is recorded (the same values, one full-resolution
    tensor less to write at 256 px), out of place in training."""
    return F.silu(x_BCHW, inplace=not torch.is_grad_enabled())


class ResnetBlock(nn.Module):
    """x + conv(swish(norm(conv(swish(norm(x)))))), with a 1x1 shortcut when the width changes."""

    def __init__(self, c_in: int, c_out: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = group_norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x_BCHW)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        skip = x_BCHW if self.nin_shortcut is None else self.nin_shortcut(x_BCHW)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the positions of a feature map (1x1 convs for q, k, v and the output)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BCHW.shape
        h = self.norm(x_BCHW)
        q_BNC = self.q(h).reshape(B, C, H * W).transpose(1, 2)
        k_BCN, v_BCN = self.k(h).reshape(B, C, H * W), self.v(h).reshape(B, C, H * W)
        # softmax(q k^T / sqrt(C)) v in the official order of operations (two bmm): fused attention kernels round
        # differently, and the decoder amplifies that to ~1e-5 in pixels; the maps are small (16x16 at 256 px)
        w_BNN = torch.bmm(q_BNC, k_BCN).mul_(C ** -0.5).softmax(dim=2)
        a_BCN = torch.bmm(v_BCN, w_BNN.transpose(1, 2))
        return x_BCHW + self.proj_out(a_BCN.reshape(B, C, H, W))


class Downsample(nn.Module):
    """Halve the side: zero-pad right and bottom by one, then a 3x3 convolution with stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x_BCHW, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the side: nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x_BCHW, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution of the encoder or decoder: residual blocks, optional attention after each, a resampler."""

    def __init__(self, c_in: int, c_out: int, blocks: int, attn: bool, dropout: float, resample: str | None):
        super().__init__()
        self.res = nn.ModuleList([ResnetBlock(c_in if i == 0 else c_out, c_out, dropout) for i in range(blocks)])
        self.attn = nn.ModuleList([AttnBlock(c_out) for _ in range(blocks)] if attn else [])
        if resample == "down":
            self.downsample = Downsample(c_out)
        elif resample == "up":
            self.upsample = Upsample(c_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.res):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        if hasattr(self, "downsample"):
            h = self.downsample(h)
        if hasattr(self, "upsample"):
            h = self.upsample(h)
        return h


def _middle(channels: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList([ResnetBlock(channels, channels, dropout), AttnBlock(channels),
                          ResnetBlock(channels, channels, dropout)])


class ConvEncoder(nn.Module):
    def __init__(self, *, ch: int, ch_mult: tuple[int, ...], z_channels: int, num_res_blocks: int = 2,
                 dropout: float = 0.0, in_channels: int = 3):
        super().__init__()
        self.downsample_factor = 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        widths = [ch] + [ch * m for m in ch_mult]
        last = len(ch_mult) - 1
        self.conv_blocks = nn.ModuleList([
            _Level(widths[i], widths[i + 1], num_res_blocks, attn=i == last, dropout=dropout,
                   resample=None if i == last else "down") for i in range(len(ch_mult))])
        self.mid = _middle(widths[-1], dropout)
        self.norm_out = group_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], z_channels, 3, padding=1)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, z_channels, H / f, W / f) with f = 2 ** (len(ch_mult) - 1)."""
        h = self.conv_in(x_B3HW)
        for level in self.conv_blocks:
            h = level(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(swish(self.norm_out(h)))


class ConvDecoder(nn.Module):
    def __init__(self, *, ch: int, ch_mult: tuple[int, ...], z_channels: int, num_res_blocks: int = 2,
                 dropout: float = 0.0, out_channels: int = 3):
        super().__init__()
        widths = [ch * m for m in ch_mult]
        self.conv_in = nn.Conv2d(z_channels, widths[-1], 3, padding=1)
        self.mid = _middle(widths[-1], dropout)
        levels, c_in = [], widths[-1]
        for i in reversed(range(len(ch_mult))):  # coarsest level first
            levels.append(_Level(c_in, widths[i], num_res_blocks + 1, attn=i == len(ch_mult) - 1, dropout=dropout,
                                 resample="up" if i != 0 else None))
            c_in = widths[i]
        self.conv_blocks = nn.ModuleList(levels)
        self.norm_out = group_norm(c_in)
        self.conv_out = nn.Conv2d(c_in, out_channels, 3, padding=1)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive adversarial weight balances gradients at."""
        return self.conv_out.weight

    def forward(self, z_BChw: torch.Tensor) -> torch.Tensor:
        """(B, z_channels, h, w) -> (B, 3, h * f, w * f), not clamped."""
        h = self.conv_in(z_BChw)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))
