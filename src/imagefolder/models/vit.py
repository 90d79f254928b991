"""ViT encoder that appends latent tokens, and ViT decoder that paints pixels from latents (timm backbones).

Encoder input sequence: ``[cls, image patches] + [latents of branch 1] + ... + [latents of branch P]``. Each
branch's latents form a sqrt(n) x sqrt(n) grid that gets the image position embedding resampled to that grid and a
level embedding (0 for cls + image tokens, p for branch p). The output is the last P*n tokens after the final norm.

Decoder input sequence: ``[cls, mask tokens] + [cls, latents]``, each group with the (resampled) position
embedding and level embedding 0 / 1; the image tokens after the final norm go through a linear layer to
patch_size^2 * 3 pixels each.

Glossary: ``B`` batch, ``D`` ViT width, ``N`` image tokens, ``n`` latent tokens per branch, ``P`` branches,
``h = w = sqrt(n)`` latent grid side.
"""
from __future__ import annotations

import math
from pathlib import Path

import timm
import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from ..config import ConfigError


def create_vit(model_name: str, *, image_size: int, patch_size: int, drop_path_rate: float,
               vit_kwargs: dict | None = None, pretrained: bool | str | Path = False) -> VisionTransformer:
    """A timm ViT of the DINOv2 family at our image and patch size, without a classifier head.

    ``pretrained``: False (random init), True (timm's normal download) or a path to a local weights file
    (``.safetensors`` / ``.bin`` / ``.pth`` in timm's format), which timm resamples to our patch and grid size.
    """
    kwargs = dict(img_size=image_size, patch_size=patch_size, drop_path_rate=drop_path_rate, num_classes=0,
                  **(vit_kwargs or {}))
    if not timm.is_model(model_name):
        raise ConfigError(f"unknown timm model {model_name!r} (expected a ViT such as vit_base_patch14_dinov2.lvd142m)")
    if isinstance(pretrained, (str, Path)):
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {path}")
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    else:
        model = timm.create_model(model_name, pretrained=bool(pretrained), **kwargs)
        if not pretrained and model.pos_embed is not None:
            _init_sincos_pos_embed(model)
    if not isinstance(model, VisionTransformer) or model.num_prefix_tokens != 1 or model.no_embed_class \
            or model.pos_embed is None:
        raise ConfigError(f"{model_name!r} must be a timm VisionTransformer with one class token and a learned "
                          "position embedding that covers it (DINOv2 models without registers)")
    return model


def sincos_2d(dim: int, side: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes (side^2, dim): a quarter of the channels each for sin/cos of x and y."""
    if dim % 4:
        raise ConfigError(f"a 2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64),
                            indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    x, y = xs.flatten()[:, None] * omega, ys.flatten()[:, None] * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).float()


@torch.no_grad()
def _init_sincos_pos_embed(model: VisionTransformer) -> None:
    """Start a randomly initialised ViT's learned position embedding from smooth 2-D sin-cos codes (cls entry 0).

    Latent grids take the image position embedding resampled to their size; from random noise that resampling
    carries no spatial meaning and a from-scratch tokenizer learns very slowly (measured on the 32 px shapes
    set: +0.5 dB PSNR after 500 steps). Pretrained DINOv2 embeddings are smooth already and are left alone.
    """
    side = math.isqrt(model.pos_embed.shape[1] - 1)
    if side * side + 1 != model.pos_embed.shape[1] or model.embed_dim % 4:
        return
    model.pos_embed[0, 0].zero_()
    model.pos_embed[0, 1:].copy_(sincos_2d(model.embed_dim, side))


def level_ids(sizes: list[int], device: torch.device | str | None = None) -> torch.Tensor:
    """(1, sum(sizes)) int64: group i of ``sizes[i]`` tokens gets level i (the official ``lvl1LC``)."""
    return torch.cat([torch.full((s,), i, dtype=torch.long, device=device) for i, s in enumerate(sizes)]).view(1, -1)


def _grid_pos_embed(model: VisionTransformer, side: int) -> torch.Tensor:
    """The model's position embedding (cls entry first) resampled to a side x side grid: (1, 1 + side^2, D)."""
    return resample_abs_pos_embed(model.pos_embed, (side, side), num_prefix_tokens=1)


class LatentViTEncoder(nn.Module):
    def __init__(self, model: VisionTransformer, num_latent_tokens: int, product_quant: int, abs_pos_embed: bool):
        super().__init__()
        self.model = model
        self.embed_dim = D = model.embed_dim
        self.num_img_tokens = model.patch_embed.num_patches
        self.n, self.P = num_latent_tokens, product_quant
        self.side = math.isqrt(num_latent_tokens)
        self.abs_pos_embed = abs_pos_embed
        self.latent_tokens = nn.Parameter(torch.empty(1, self.P * self.n, D))
        nn.init.normal_(self.latent_tokens, std=1e-6)
        if abs_pos_embed:
            self.lvl_embed = nn.Embedding(1 + self.P, D)
            nn.init.trunc_normal_(self.lvl_embed.weight, mean=0, std=math.sqrt(1 / D / 3))
            self.level_sizes = [1 + self.num_img_tokens] + [self.n] * self.P
        else:
            self.latent_pos_embed = nn.Parameter(torch.empty(1, self.P * self.n, D))
            nn.init.trunc_normal_(self.latent_pos_embed, std=0.02)

    def forward(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> latent tokens (B, P*n, D), branch p in rows p*n:(p+1)*n."""
        m = self.model
        x_BND = m.patch_embed(img_B3HW)
        B = x_BND.shape[0]
        x = torch.cat([m.cls_token.expand(B, -1, -1), x_BND], dim=1) + m.pos_embed
        z = self.latent_tokens.expand(B, -1, -1)
        if self.abs_pos_embed:
            z = z + _grid_pos_embed(m, self.side)[:, 1:].repeat(1, self.P, 1)
            x = torch.cat([x, z], dim=1) + self.lvl_embed(level_ids(self.level_sizes, x.device))
        else:
            x = torch.cat([x, z + self.latent_pos_embed], dim=1)
        x = m.blocks(m.norm_pre(m.pos_drop(x)))
        return m.norm(x)[:, -self.P * self.n:]


class LatentViTDecoder(nn.Module):
    def __init__(self, model: VisionTransformer, num_latent_tokens: int, image_size: int, patch_size: int,
                 abs_pos_embed: bool):
        super().__init__()
        model.patch_embed = nn.Identity()  # pixels come from latents: the patch projection is never used
        self.model = model
        self.embed_dim = D = model.embed_dim
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.num_img_tokens = self.grid * self.grid
        self.n, self.side = num_latent_tokens, math.isqrt(num_latent_tokens)
        self.abs_pos_embed = abs_pos_embed
        self.mask_token = nn.Parameter(torch.empty(1, 1, D))
        nn.init.normal_(self.mask_token, std=1e-6)
        if abs_pos_embed:
            self.lvl_embed = nn.Embedding(2, D)
            nn.init.trunc_normal_(self.lvl_embed.weight, mean=0, std=math.sqrt(1 / D / 3))
            self.level_sizes = [1 + self.num_img_tokens, 1 + self.n]
        else:
            self.latent_pos_embed = nn.Parameter(torch.empty(1, self.n, D))
            nn.init.trunc_normal_(self.latent_pos_embed, std=0.02)
        self.to_pixel = nn.Linear(D, 3 * patch_size * patch_size)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive adversarial weight balances gradients at."""
        return self.to_pixel.weight

    def forward(self, z_BnD: torch.Tensor) -> torch.Tensor:
        """Latent tokens (B, n, D) -> image (B, 3, H, W), not clamped."""
        m = self.model
        B = z_BnD.shape[0]
        cls = m.cls_token.expand(B, -1, -1)
        x = torch.cat([cls, self.mask_token.expand(B, self.num_img_tokens, -1)], dim=1) + m.pos_embed
        if self.abs_pos_embed:
            z = torch.cat([cls, z_BnD], dim=1) + _grid_pos_embed(m, self.side)
            x = torch.cat([x, z], dim=1) + self.lvl_embed(level_ids(self.level_sizes, x.device))
        else:
            x = torch.cat([x, z_BnD + self.latent_pos_embed], dim=1)
        x = m.norm(m.blocks(m.norm_pre(m.pos_drop(x))))
        return self.unpatchify(self.to_pixel(x[:, 1:1 + self.num_img_tokens]))

    def unpatchify(self, x_BNp: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*3) with pixel order (row, col, channel) inside a patch -> (B, 3, H, W)."""
        B, g, p = x_BNp.shape[0], self.grid, self.patch_size
        x = x_BNp.reshape(B, g, g, p, p, 3).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(B, 3, g * p, g * p)
