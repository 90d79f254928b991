"""The ImageFolder tokenizer: ViT encoder -> P multi-scale residual quantizers (product quantization) -> ViT decoder.

Codes are nested lists ``codes[p][si]`` of int64 tensors (B, pn*pn), branch p, scale si (small to large), the layout
of the official ``f_to_idxBl_or_fhat`` output per branch.

Glossary: ``B`` batch, ``D`` ViT width, ``P`` branches, ``n`` latent tokens per branch, ``Cb`` code size per branch,
``h = w = sqrt(n)`` latent grid side, ``K`` scales, ``L`` codes per branch over all scales.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError, TokenizerConfig
from .lowp import LowPrecisionWeights, channels_last_input, low_precision
from .conv import ConvDecoder, ConvEncoder
from .quantizer import MultiScaleQuantizer, _identity
from .vit import LatentViTDecoder, LatentViTEncoder, create_vit

Codes = list[list[torch.Tensor]]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# on a CPU without autograd, Tokenizer.fhat_to_img decodes at most this many output pixels at once (one 256 px picture)
DECODE_CHUNK_PIXELS = 256 * 256


@dataclass
class TokenizerOutput:
    recon: torch.Tensor                                   # (B, 3, H, W), not clamped
    losses: dict[str, torch.Tensor]                       # "codebook", "commitment", "semantic" (when enabled)
    n_keep: torch.Tensor                                  # (B,) scales kept per sample (quantizer dropout)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Tokenizer(nn.Module):
    def __init__(self, config: TokenizerConfig, *, pretrained_backbone: bool | str | Path = False):
        """``pretrained_backbone``: initialise encoder, decoder and teacher from DINOv2 weights (True: timm's
        download; a path: a local timm weights file). Loading a checkpoint afterwards overrides them anyway."""
        super().__init__()
        self.config = c = config
        self._lowp = LowPrecisionWeights()
        vit = dict(image_size=c.image_size, patch_size=c.patch_size, vit_kwargs=c.vit_kwargs)
        conv = dict(ch=c.ch, z_channels=c.z_channels, num_res_blocks=c.num_res_blocks, dropout=c.dropout_p)
        P, Cb = c.product_quant, c.codebook_embed_dim
        if c.enc_type == "cnn":  # branches are channel groups of one conv map: quant_conv gives P * Cb channels
            self.encoder = ConvEncoder(ch_mult=c.encoder_ch_mult, **conv)
            self.quant_conv = nn.Conv2d(c.z_channels, P * Cb, c.quant_conv_ks, padding=c.quant_conv_ks // 2)
        else:  # branches are separate sets of latent tokens: one quant_conv maps every token to Cb channels
            self.encoder = LatentViTEncoder(
                create_vit(c.encoder_model, drop_path_rate=c.drop_path_rate, pretrained=pretrained_backbone, **vit),
                c.num_latent_tokens, P, c.abs_pos_embed)
            self.quant_conv = nn.Conv2d(self.encoder.embed_dim, Cb, 1)
        if c.dec_type == "cnn":
            self.decoder = ConvDecoder(ch_mult=c.decoder_ch_mult, **conv)
            self.post_quant_conv = nn.Conv2d(P * Cb, c.z_channels, c.quant_conv_ks, padding=c.quant_conv_ks // 2)
        else:
            self.decoder = LatentViTDecoder(
                create_vit(c.decoder_model, drop_path_rate=c.drop_path_rate, pretrained=pretrained_backbone, **vit),
                c.num_latent_tokens, c.image_size, c.patch_size, c.abs_pos_embed)
            self.post_quant_conv = nn.Conv2d(P * Cb, self.decoder.embed_dim, 1)
        self.quantizes = nn.ModuleList([
            MultiScaleQuantizer(c.codebook_size, Cb, c.v_patch_nums,
                                share_quant_resi=c.share_quant_resi, quant_resi=c.quant_resi, beta=c.commit_loss_beta,
                                l2_norm=c.codebook_l2_norm, pattern_scales=c.pattern_scales,
                                perturb=c.latent_perturb, perturb_topk=c.latent_perturb_topk)
            for _ in range(P)])
        if c.semantic_guide != "none":
            if c.semantic_guide == "dinov2":
                self.semantic_model = create_vit(c.encoder_model, drop_path_rate=0.0, pretrained=pretrained_backbone,
                                                 **vit)
                teacher_dim = self.semantic_model.embed_dim
            else:  # a small classifier trained on the dataset: a teacher that needs no download
                from .classifier import ClassifierConfig, DomainClassifier
                if not c.teacher:
                    raise ConfigError("semantic_guide='classifier' needs the teacher's ClassifierConfig in 'teacher'")
                teacher = ClassifierConfig.from_dict(c.teacher)
                teacher_dim = teacher.feature_dim
                if c.enc_type != "cnn" and teacher_dim != self.encoder.embed_dim:
                    raise ConfigError(f"the classifier teacher's features ({teacher_dim}) must be as wide as "
                                      f"the encoder ({self.encoder.embed_dim}): quant_conv projects both")
                self.semantic_model = DomainClassifier(teacher)
            self.semantic_model.requires_grad_(False).eval()
            if c.enc_type == "cnn":  # the authors' CNN path: a linear map of the teacher feature to the branch
                self.sem_linear = nn.Linear(teacher_dim, Cb if c.half_sem else P * Cb)
            elif not c.half_sem:
                self.sem_linear = nn.Conv2d(P * Cb, Cb, 1)

    def precision(self, dtype: torch.dtype):
        """Context manager: run inside it in ``dtype`` (float32: unchanged; bfloat16/float16: autocast, with the
        Linear weights cast once and kept between calls; ``clear_low_precision_cache`` frees them)."""
        return low_precision((self,), dtype, self._lowp)

    def clear_low_precision_cache(self) -> None:
        self._lowp.clear()

    def train(self, mode: bool = True) -> "Tokenizer":
        super().train(mode)
        if hasattr(self, "semantic_model"):
            self.semantic_model.eval()  # the teacher is frozen
        return self

    # sizes ---------------------------------------------------------------------------------------------------
    @property
    def num_branches(self) -> int:
        return self.config.product_quant

    @property
    def v_patch_nums(self) -> tuple[int, ...]:
        return self.config.v_patch_nums

    # encoder side --------------------------------------------------------------------------------------------
    def encode_latents(self, x_B3HW: torch.Tensor) -> list[torch.Tensor]:
        """Continuous latents before quantization: one (B, Cb, h, w) map per branch."""
        self._check_images(x_B3HW)
        if self.config.enc_type == "cnn":  # (B, P*Cb, h, w): branch p is the channel group p*Cb:(p+1)*Cb
            f_BChw = self.quant_conv(self.encoder(channels_last_input(x_B3HW)))
            return [f.contiguous() for f in f_BChw.chunk(self.num_branches, dim=1)]
        h_BLD = self.encoder(x_B3HW)
        f_BC = self.quant_conv(h_BLD.transpose(1, 2).unsqueeze(-1))  # 1x1 conv over all P*n tokens: (B, Cb, P*n, 1)
        B, s = f_BC.shape[0], self.config.latent_side
        return [f.reshape(B, -1, s, s) for f in f_BC.chunk(self.num_branches, dim=2)]

    @torch.no_grad()
    def encode(self, x_B3HW: torch.Tensor) -> Codes:
        """Images in [-1, 1] -> codes[branch][scale], each (B, pn*pn) int64."""
        return [q.encode(f) for q, f in zip(self.quantizes, self.encode_latents(x_B3HW))]

    @torch.no_grad()
    def encode_with_fhats(self, x_B3HW: torch.Tensor) -> tuple[Codes, list[list[torch.Tensor]]]:
        """Codes and the cumulative f_hat after each scale, both as [branch][scale]."""
        out = [q.encode(f, return_fhats=True) for q, f in zip(self.quantizes, self.encode_latents(x_B3HW))]
        return [o[0] for o in out], [o[1] for o in out]

    # decoder side --------------------------------------------------------------------------------------------
    def codes_to_fhat(self, codes: Codes) -> torch.Tensor:
        """Codes (all scales, or a prefix of scales) -> f_hat with the branches on channels: (B, P*Cb, h, w)."""
        self._check_branches(codes)
        return torch.cat([q.codes_to_fhats(c)[-1] for q, c in zip(self.quantizes, codes)], dim=1)

    def fhat_to_img(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """f_hat (B, P*Cb, h, w) -> image (B, 3, H, W) clamped to [-1, 1].

        On a CPU without autograd the batch is decoded in chunks of at most ``DECODE_CHUNK_PIXELS`` output pixels
        (one 256 px picture; 64 pictures of 32 px): the decoder's full-resolution activations are the largest
        tensors of sampling, and chunking them takes the same time there (VAR's VQVAE at batch 8: 22.8 s against
        23.0 s) with 1.7 GB less peak memory (BENCHMARKS.md). Chunks change the last bits only (oneDNN picks its
        kernels by batch size): within 1e-5 of the whole batch's decode."""
        B, chunk = f_hat_BChw.shape[0], self._decode_chunk(f_hat_BChw)
        if chunk >= B:
            return self._decode_unclamped(f_hat_BChw).clamp(-1, 1)
        return torch.cat([self._decode_unclamped(f).clamp(-1, 1) for f in f_hat_BChw.split(chunk)])

    def _decode_chunk(self, f_hat_BChw: torch.Tensor) -> int:
        """Pictures ``fhat_to_img`` decodes at once: all of them on a GPU or while autograd records."""
        if f_hat_BChw.device.type != "cpu" or torch.is_grad_enabled():
            return f_hat_BChw.shape[0]
        return max(1, DECODE_CHUNK_PIXELS // self.config.image_size ** 2)

    def _decode_unclamped(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        if self.config.dec_type == "cnn":
            return self.decoder(self.post_quant_conv(channels_last_input(f_hat_BChw))).contiguous()
        return self.decoder(self.post_quant_conv(f_hat_BChw).flatten(2).transpose(1, 2))

    @torch.no_grad()
    def decode(self, codes: Codes) -> torch.Tensor:
        """codes[branch][scale] -> images (B, 3, H, W) in [-1, 1]. A prefix of the scales decodes coarser images."""
        return self.fhat_to_img(self.codes_to_fhat(codes))

    @torch.no_grad()
    def reconstruct(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)), in one pass."""
        return self.decode(self.encode(x_B3HW))

    @torch.no_grad()
    def reconstruct_per_scale(self, x_B3HW: torch.Tensor) -> list[torch.Tensor]:
        """Reconstructions from the first 1, 2, ..., K scales: K images (B, 3, H, W) in [-1, 1]."""
        _, fhats = self.encode_with_fhats(x_B3HW)
        K, B = len(self.v_patch_nums), x_B3HW.shape[0]
        f_KB = torch.cat([torch.cat([fh[si] for fh in fhats], dim=1) for si in range(K)], dim=0)
        return list(self.fhat_to_img(f_KB).split(B, dim=0))

    # generator interface -------------------------------------------------------------------------------------
    def var_input(self, codes: Codes) -> torch.Tensor:
        """Teacher-forcing input of the generator (B, L - first_l, P*Cb), branches on channels."""
        self._check_branches(codes)
        return torch.cat([q.var_input(c) for q, c in zip(self.quantizes, codes)], dim=-1)

    def scale_contribution(self, si: int, idx_per_branch: list[torch.Tensor],
                           vectors_per_branch: list[torch.Tensor] | None = None) -> torch.Tensor:
        """What the codes of scale ``si`` (one (B, pn*pn) tensor per branch) add to f_hat: (B, P*Cb, h, w).
        ``vectors_per_branch``: (B, pn*pn, D) code vectors to use instead of the codes' own (VAR's more_smooth;
        D = Cb, or a pattern scale's patch size)."""
        vectors = vectors_per_branch or [None] * len(self.quantizes)
        return torch.cat([q.contribution(si, idx, v) for q, idx, v in zip(self.quantizes, idx_per_branch, vectors)],
                         dim=1)

    # semantic regularisation ---------------------------------------------------------------------------------
    def semantic_features(self, x_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen teacher's pooled feature (B, D) of images in [-1, 1] and its projection into the regularised
        code space (B, C): by quant_conv on the ViT path (as the authors do), by ``sem_linear`` on the conv path."""
        if not hasattr(self, "semantic_model"):
            raise RuntimeError("this tokenizer has no semantic teacher (semantic_guide='none')")
        with torch.no_grad():
            if self.config.semantic_guide == "classifier":
                feat_BD = self.semantic_model.features(x_B3HW)  # trained on [-1, 1] images
            else:
                mean = torch.tensor(IMAGENET_MEAN, device=x_B3HW.device).view(1, 3, 1, 1)
                std = torch.tensor(IMAGENET_STD, device=x_B3HW.device).view(1, 3, 1, 1)
                feat_BD = self.semantic_model(((x_B3HW + 1) / 2 - mean) / std)
        if self.config.enc_type == "cnn":
            return feat_BD, self.sem_linear(feat_BD)
        return feat_BD, self.quant_conv(feat_BD[..., None, None]).mean(dim=(2, 3))

    def semantic_student(self, latents: list[torch.Tensor], quant: list[torch.Tensor]) -> torch.Tensor:
        """What the teacher feature is contrasted with (B, C): the spatial mean of the regularised branch's quantized
        map on the ViT path (the last branch, or a 1x1 mix of all when half_sem is False), of its continuous encoder
        map on the conv path (the authors' CNN path; all branches' channels when half_sem is False)."""
        c = self.config
        if c.enc_type == "cnn":
            maps = latents[-1] if c.half_sem else torch.cat(latents, dim=1)
        else:
            maps = quant[-1] if c.half_sem else self.sem_linear(torch.cat(quant, dim=1))
        return maps.mean(dim=(2, 3))

    def semantic_loss(self, x_B3HW: torch.Tensor, student_BC: torch.Tensor, n_skip: int,
                      gather_fn: Callable[[torch.Tensor], torch.Tensor] = _identity) -> torch.Tensor:
        """CLIP-style symmetric contrastive loss between the teacher feature and ``student_BC``
        (``semantic_student``), over samples from ``n_skip`` on (those whose scales were not dropped)."""
        c = self.config
        _, teacher_BC = self.semantic_features(x_B3HW)
        a, b = gather_fn(teacher_BC[n_skip:].float()), gather_fn(student_BC[n_skip:].float())
        if a.shape[0] == 0:
            return a.new_zeros(())
        if c.clip_norm:
            a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        logits = c.sem_loss_scale * a @ b.T
        labels = torch.arange(a.shape[0], device=a.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2 * c.sem_loss_weight

    # training forward ----------------------------------------------------------------------------------------
    def sample_scale_dropout(self, batch_size: int, device: torch.device | str = "cpu",
                             generator: torch.Generator | None = None) -> torch.Tensor:
        """Scales kept per sample: the first int(B * codebook_drop) samples keep a random prefix of
        start_drop..K scales, the others keep all K (the same draw serves every branch)."""
        c = self.config
        K = c.num_scales
        n_keep = torch.full((batch_size,), K, dtype=torch.long)
        n_drop = int(batch_size * c.codebook_drop)
        n_keep[:n_drop] = torch.randint(c.start_drop, K + 1, (n_drop,), generator=generator)
        return n_keep.to(device)

    def forward(self, x_B3HW: torch.Tensor, *, n_keep: torch.Tensor | None = None,
                gather_fn: Callable[[torch.Tensor], torch.Tensor] = _identity,
                reduce_fn: Callable[[torch.Tensor], torch.Tensor] = _identity) -> TokenizerOutput:
        """Training/validation forward. In training mode quantizer dropout is drawn unless ``n_keep`` is given; in
        eval mode every sample keeps all scales. ``gather_fn`` (all-gather with gradient) and ``reduce_fn``
        (all-reduce sum) let a distributed trainer share semantic features, code hits and the residual patches
        that pattern codebooks are filled from across processes."""
        B = x_B3HW.shape[0]
        if n_keep is None:
            n_keep = self.sample_scale_dropout(B, x_B3HW.device) if self.training \
                else torch.full((B,), self.config.num_scales, device=x_B3HW.device)
        quant, outs = [], []
        latents = self.encode_latents(x_B3HW)
        for q, f in zip(self.quantizes, latents):
            out = q(f, n_keep, gather_fn)
            quant.append(out.f_hat)
            outs.append(out)
            if self.training:
                q.update_usage(reduce_fn(out.hits_KV))
        losses = {"codebook": sum(o.codebook_loss for o in outs) / len(outs),  # means over branches, as official
                  "commitment": sum(o.commit_loss for o in outs) / len(outs)}
        recon = self._decode_unclamped(torch.cat(quant, dim=1))
        if hasattr(self, "semantic_model"):
            n_skip = int(B * self.config.codebook_drop) if self.training else 0
            losses["semantic"] = self.semantic_loss(x_B3HW, self.semantic_student(latents, quant), n_skip, gather_fn)
        return TokenizerOutput(recon=recon, losses=losses, n_keep=n_keep)

    # validation ----------------------------------------------------------------------------------------------
    def _check_images(self, x: torch.Tensor) -> None:
        s = self.config.image_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2:] != (s, s):
            raise ValueError(f"expected images (B, 3, {s}, {s}) in [-1, 1], got {tuple(x.shape)}")

    def _check_branches(self, codes: Codes) -> None:
        if len(codes) != self.num_branches:
            raise ValueError(f"expected codes for {self.num_branches} branches, got {len(codes)}")
