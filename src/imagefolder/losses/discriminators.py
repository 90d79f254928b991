"""Discriminators for tokenizer training; each maps images in [-1, 1] to logits (any shape, the losses average).

* ``patchgan``: the pix2pix N-layer PatchGAN (Isola et al. 2017): a logit per overlapping patch, (B, 1, h, w).
* ``stylegan``: a StyleGAN2-style residual discriminator (Karras et al. 2020), without blur filters or
  equalised learning rate: one logit per image, (B,).
* ``dinodisc``: a frozen DINOv2 ViT whose intermediate block outputs feed small trainable heads, one logit per
  token per head (the projected-discriminator design of StyleGAN-T, used by VAR and XQ-GAN): (B, heads * (1 + N)).

``build_discriminator(kind, image_size, **kw)`` picks one by name.

Glossary: ``B`` batch, ``C`` channels, ``H W`` image height and width, ``L`` tokens (class token + patches),
``D`` ViT width, ``N`` patch tokens.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.nn.utils.parametrizations import spectral_norm

from ..models.vit import create_vit

DEFAULT_DINO_MODEL = "vit_small_patch14_dinov2.lvd142m"


class PatchGANDiscriminator(nn.Sequential):
    """pix2pix N-layer PatchGAN: stride-2 4x4 convs (width ndf, doubling up to 8 * ndf), BatchNorm, LeakyReLU(0.2),
    then two stride-1 4x4 convs; output (B, 1, H / 2^n_layers - 2, W / 2^n_layers - 2)."""

    def __init__(self, image_size: int, ndf: int = 64, n_layers: int = 3):
        side = image_size // 2 ** n_layers - 2
        if n_layers < 1 or side < 1:
            raise ValueError(f"patchgan with n_layers={n_layers} needs images of at least {3 * 2 ** n_layers} "
                             f"pixels, got {image_size}")
        widths = [ndf * min(2 ** i, 8) for i in range(n_layers + 1)]
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(widths[i - 1], widths[i], 4, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(widths[i]), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        super().__init__(*layers)
        for m in self.modules():  # the pix2pix / taming initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)


class _DownBlock(nn.Module):
    """Residual block halving the resolution: two 3x3 convs then 2x2 average pooling, plus a pooled 1x1 skip."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_in, 3, padding=1)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv1(x_BCHW), 0.2)
        y = F.avg_pool2d(F.leaky_relu(self.conv2(y), 0.2), 2)
        return (y + self.skip(F.avg_pool2d(x_BCHW, 2))) / math.sqrt(2)


def minibatch_stddev(x_BCHW: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append one channel: the mean standard deviation of the features over a group of images (StyleGAN).

    The group size is gcd(B, group_size), so any batch size works; image i belongs to group i mod (B / G).
    """
    B, C, H, W = x_BCHW.shape
    G = math.gcd(B, group_size)
    std = (x_BCHW.view(G, B // G, C, H, W).var(dim=0, unbiased=False) + 1e-8).sqrt()
    s = std.mean(dim=(1, 2, 3)).repeat(G)
    return torch.cat([x_BCHW, s.view(B, 1, 1, 1).expand(B, 1, H, W)], dim=1)


class StyleGANDiscriminator(nn.Module):
    """StyleGAN2 residual discriminator for square images whose side is a power of two (>= 8).

    Width ``channels`` at full resolution, doubled at each halving up to ``max_channels``; at 4x4: minibatch stddev,
    a 3x3 conv, and two linear layers to one logit per image.
    """

    def __init__(self, image_size: int, channels: int = 64, max_channels: int = 256, mbstd_group_size: int = 4):
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"stylegan discriminator needs a power-of-two image size >= 8, got {image_size}")
        self.mbstd_group_size = mbstd_group_size
        n_blocks = int(math.log2(image_size)) - 2
        widths = [min(channels * 2 ** i, max_channels) for i in range(n_blocks + 1)]
        self.from_rgb = nn.Conv2d(3, widths[0], 1)
        self.blocks = nn.Sequential(*[_DownBlock(widths[i], widths[i + 1]) for i in range(n_blocks)])
        c = widths[-1]
        self.conv = nn.Conv2d(c + 1, c, 3, padding=1)
        self.fc = nn.Linear(c * 16, c)
        self.out = nn.Linear(c, 1)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> logits (B,)."""
        x = self.blocks(F.leaky_relu(self.from_rgb(x_B3HW), 0.2))
        x = F.leaky_relu(self.conv(minibatch_stddev(x, self.mbstd_group_size)), 0.2)
        x = F.leaky_relu(self.fc(x.flatten(1)), 0.2)
        return self.out(x).squeeze(1)


class _TokenHead(nn.Module):
    """Per-token logits from ViT features: spectral-normalised 1x1 conv, a residual 1-D conv (kernel 9) along the
    token sequence with per-image normalisation, and a 1x1 conv to one channel."""

    def __init__(self, dim: int, channels: int, kernel_size: int = 9):
        super().__init__()
        self.proj = spectral_norm(nn.Conv1d(dim, channels, 1))
        self.mix = spectral_norm(nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2))
        self.norm = nn.GroupNorm(1, channels)
        self.out = spectral_norm(nn.Conv1d(channels, 1, 1))

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L)."""
        h = F.leaky_relu(self.proj(x_BLD.transpose(1, 2)), 0.2)
        h = (h + F.leaky_relu(self.norm(self.mix(h)), 0.2)) / math.sqrt(2)
        return self.out(h).squeeze(1)


def default_block_ids(depth: int, count: int = 4) -> list[int]:
    """``count`` evenly spaced blocks ending with the last: depth 12 -> [2, 5, 8, 11]; fewer if depth < count."""
    return sorted({round((i + 1) * depth / count) - 1 for i in range(count)})


class DinoDiscriminator(nn.Module):
    """Frozen DINOv2 ViT + trainable token heads on several intermediate blocks (class token and patches).

    Inputs in [-1, 1] are mapped to ImageNet mean / std; if ``image_size`` is not a multiple of ``patch_size`` they
    are resized (bilinear, antialiased) to the largest multiple below it. The backbone stays in eval mode and
    frozen whatever ``train()`` says; gradients still flow through it to the images (for the generator loss).
    ``pretrained``: False (random backbone, tests), True (timm download) or a local weights file.
    """

    def __init__(self, image_size: int, model_name: str = DEFAULT_DINO_MODEL, patch_size: int = 14,
                 vit_kwargs: dict | None = None, pretrained: bool | str | Path = False,
                 block_ids: list[int] | None = None, head_channels: int = 128):
        super().__init__()
        self.input_size = image_size // patch_size * patch_size
        if self.input_size == 0:
            raise ValueError(f"dinodisc needs images of at least patch_size={patch_size} pixels, got {image_size}")
        self.backbone = create_vit(model_name, image_size=self.input_size, patch_size=patch_size,
                                   drop_path_rate=0.0, vit_kwargs=vit_kwargs, pretrained=pretrained)
        self.backbone.requires_grad_(False)
        depth = len(self.backbone.blocks)
        self.block_ids = list(block_ids) if block_ids is not None else default_block_ids(depth)
        if not self.block_ids or not all(0 <= i < depth for i in self.block_ids):
            raise ValueError(f"block_ids must be indices of the backbone's {depth} blocks, got {self.block_ids}")
        self.heads = nn.ModuleList(_TokenHead(self.backbone.embed_dim, head_channels) for _ in self.block_ids)
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1), persistent=False)
        self.train()

    def train(self, mode: bool = True) -> DinoDiscriminator:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> logits (B, heads * L)."""
        x = ((x_B3HW + 1) / 2 - self.mean) / self.std
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        feats = self.backbone.forward_intermediates(x, indices=self.block_ids, return_prefix_tokens=True,
                                                    output_fmt="NLC", intermediates_only=True)
        logits = [head(torch.cat([prefix, patches], dim=1)) for head, (patches, prefix) in zip(self.heads, feats)]
        return torch.cat(logits, dim=1)


DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "patchgan": PatchGANDiscriminator,
    "stylegan": StyleGANDiscriminator,
    "dinodisc": DinoDiscriminator,
}


def build_discriminator(kind: str, image_size: int, **kw) -> nn.Module:
    """A discriminator by name (``patchgan``, ``stylegan``, ``dinodisc``); ``kw`` go to its constructor."""
    if kind not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {kind!r}; valid kinds: {', '.join(DISCRIMINATORS)}")
    return DISCRIMINATORS[kind](image_size, **kw)
