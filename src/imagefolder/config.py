"""Typed configurations and named presets for the tokenizer and the generator.

Field names follow the official ImageFolder / VAR arguments (``codebook_size``, ``v_patch_nums``, ...), so the
authors' YAML files and habits carry over. Every checkpoint we write stores its config; ``load_*`` needs no flags.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def set_fields(config: Any, **values: Any) -> None:
    """Set fields of a frozen dataclass while it is being constructed (``__post_init__``): normalised or
    derived values."""
    for name, value in values.items():
        object.__setattr__(config, name, value)


@dataclass(frozen=True)
class TokenizerConfig:
    """The ImageFolder tokenizer: an encoder (ViT with latent tokens, or the authors' conv network), P multi-scale
    residual quantizers (product quantization: one per branch) and a decoder (ViT or conv)."""

    codebook_size: int = 4096            # V: codes per branch
    codebook_embed_dim: int = 32         # Cb: code vector size per branch
    product_quant: int = 2               # P: number of branches (product quantization)
    v_patch_nums: tuple[int, ...] = (1, 1, 2, 3, 3, 4, 5, 6, 8, 11)  # scale side lengths, small to large
    num_latent_tokens: int = 121         # n: latent tokens per branch (a square; last scale covers all of them)
    enc_type: str = "dinov2"             # encoder: "dinov2" (timm ViT + latent tokens) | "cnn" (conv network)
    dec_type: str = "dinov2"             # decoder: "dinov2" (timm ViT painting from latents) | "cnn" (conv network)
    encoder_model: str = "vit_base_patch14_dinov2.lvd142m"   # timm name of the ViT encoder and of a dinov2 teacher
    decoder_model: str = "vit_base_patch14_dinov2.lvd142m"   # timm name of the decoder backbone
    abs_pos_embed: bool = True           # latents get the resampled image position embedding + level embedding
    share_quant_resi: int = 4            # phi convs: 0 = one per scale, 1 = one shared, k = k partially shared
    quant_resi: float = 0.5              # phi(x) = (1 - r) x + r conv(x); 0 disables the convs
    codebook_drop: float = 0.1           # fraction of each batch trained on a truncated scale prefix
    start_drop: int = 3                  # fewest scales a dropped sample keeps
    commit_loss_beta: float = 0.25       # commitment weight inside the VQ loss
    pattern_scales: int = 0              # first scales whose codes are whole latent patches (nearest, placed as they are)
    latent_perturb: float = 0.0          # training only: share of code positions given one of their next-nearest codes
    latent_perturb_topk: int = 8         # ... drawn from this many nearest codes (the nearest one excluded)
    codebook_l2_norm: bool = True        # code search: cosine similarity (ImageFolder) or, false, Euclidean (VAR)
    semantic_guide: str = "dinov2"       # teacher regularising a branch: "dinov2" (frozen ViT), "classifier", "none"
    teacher: dict[str, Any] = field(default_factory=dict)  # ClassifierConfig fields when semantic_guide="classifier"
    half_sem: bool = True                # True: regularise the last branch only; False: all branches (1x1 mix)
    sem_loss_weight: float = 0.1
    sem_loss_scale: float = 1.0          # logit scale of the contrastive loss
    clip_norm: bool = False              # L2-normalise the features before the contrastive loss
    image_size: int = 256
    patch_size: int = 16
    vit_kwargs: dict[str, Any] = field(default_factory=dict)  # overrides of the timm model (embed_dim, depth, num_heads)
    drop_path_rate: float = 0.1          # stochastic depth of encoder and decoder (the teacher uses 0)
    # conv encoder / decoder (enc_type / dec_type "cnn"; the authors' VQ-16 network by default)
    ch: int = 128                        # base width (every released CNN checkpoint: 128)
    encoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # width multiple per level; the side halves between levels
    decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    z_channels: int = 256                # encoder output / decoder input channels (around quant_conv)
    num_res_blocks: int = 2              # residual blocks per encoder level (the decoder has one more per level)
    dropout_p: float = 0.0               # dropout inside the conv residual blocks
    quant_conv_ks: int = 1               # kernel of the conv quant_conv / post_quant_conv (VAR's VQVAE: 3)

    def __post_init__(self) -> None:
        set_fields(self, v_patch_nums=tuple(int(p) for p in self.v_patch_nums),
             encoder_ch_mult=tuple(int(m) for m in self.encoder_ch_mult),
             decoder_ch_mult=tuple(int(m) for m in self.decoder_ch_mult), vit_kwargs=dict(self.vit_kwargs))
        _check(self.codebook_size >= 2, f"codebook_size must be >= 2, got {self.codebook_size}")
        _check(self.codebook_embed_dim >= 1, f"codebook_embed_dim must be >= 1, got {self.codebook_embed_dim}")
        _check(self.product_quant >= 1, f"product_quant must be >= 1, got {self.product_quant}")
        _check(len(self.v_patch_nums) >= 1 and all(p >= 1 for p in self.v_patch_nums),
               f"v_patch_nums must be positive side lengths, got {self.v_patch_nums}")
        side = math.isqrt(self.num_latent_tokens)
        _check(side * side == self.num_latent_tokens,
               f"num_latent_tokens must be a square number (tokens per branch), got {self.num_latent_tokens}")
        _check(self.v_patch_nums[-1] == side,
               f"the last scale of v_patch_nums must cover all latent tokens: {self.v_patch_nums[-1]}^2 != "
               f"num_latent_tokens={self.num_latent_tokens}")
        _check(max(self.v_patch_nums) <= side, f"no scale may exceed the latent grid {side}: {self.v_patch_nums}")
        _check(self.share_quant_resi >= 0, f"share_quant_resi must be >= 0, got {self.share_quant_resi}")
        _check(0 <= self.pattern_scales <= len(self.v_patch_nums) and not any(
                   side % pn for pn in self.v_patch_nums[:self.pattern_scales]),
               f"pattern_scales {self.pattern_scales}: the sides of the first pattern_scales scales "
               f"{self.v_patch_nums[:max(self.pattern_scales, 0)]} must divide the latent grid side {side}")
        _check(0.0 <= self.codebook_drop <= 1.0, f"codebook_drop must be in [0, 1], got {self.codebook_drop}")
        _check(0.0 <= self.latent_perturb <= 1.0, f"latent_perturb must be in [0, 1], got {self.latent_perturb}")
        _check(2 <= self.latent_perturb_topk <= self.codebook_size,
               f"latent_perturb_topk must be in [2, codebook_size={self.codebook_size}], got {self.latent_perturb_topk}")
        _check(1 <= self.start_drop <= len(self.v_patch_nums),
               f"start_drop must be in [1, {len(self.v_patch_nums)}], got {self.start_drop}")
        _check(self.semantic_guide in ("dinov2", "classifier", "none"),
               f"semantic_guide must be 'dinov2', 'classifier' or 'none', got {self.semantic_guide!r}")
        set_fields(self, teacher=dict(self.teacher))  # resolved from the teacher checkpoint by train.options when empty

        for name in ("enc_type", "dec_type"):
            _check(getattr(self, name) in ("dinov2", "cnn"),
                   f"{name} must be 'dinov2' (ViT) or 'cnn' (conv network), got {getattr(self, name)!r}")
        if "dinov2" in (self.enc_type, self.dec_type):
            _check(self.image_size > 0 and self.patch_size > 0 and self.image_size % self.patch_size == 0,
                   f"image_size ({self.image_size}) must be a positive multiple of patch_size ({self.patch_size})")
        self._check_conv()
        unknown = set(self.vit_kwargs) - {"embed_dim", "depth", "num_heads", "mlp_ratio", "init_values"}
        _check(not unknown, "vit_kwargs may set embed_dim, depth, num_heads, mlp_ratio, init_values (LayerScale "
                            f"start; DINOv2 uses 1e-5, too small for training from scratch); got {sorted(unknown)}")

    def _check_conv(self) -> None:
        for part, mult in (("enc", self.encoder_ch_mult), ("dec", self.decoder_ch_mult)):
            if getattr(self, f"{part}_type") != "cnn":
                continue
            name = "encoder_ch_mult" if part == "enc" else "decoder_ch_mult"
            _check(len(mult) >= 1 and all(m >= 1 for m in mult), f"{name} must be positive integers, got {mult}")
            widths = [self.ch] + [self.ch * m for m in mult]
            _check(self.ch >= 1 and all(w % 32 == 0 for w in widths),
                   f"the conv {part}oder's widths ch * {name} = {widths[1:]} (ch = {self.ch}) must be multiples of "
                   "32 (GroupNorm with 32 groups)")
            factor = 2 ** (len(mult) - 1)
            _check(self.image_size % factor == 0 and self.image_size // factor == self.latent_side,
                   f"a conv {part}oder with {len(mult)} levels ({name}) maps {self.image_size} px to a "
                   f"{self.image_size / factor:g}x{self.image_size / factor:g} latent grid, but num_latent_tokens="
                   f"{self.num_latent_tokens} is a {self.latent_side}x{self.latent_side} grid; set num_latent_tokens"
                   f" to {(self.image_size // factor) ** 2} (and the last scale of v_patch_nums to its side)")
        _check(self.z_channels >= 1, f"z_channels must be >= 1, got {self.z_channels}")
        _check(self.num_res_blocks >= 1, f"num_res_blocks must be >= 1, got {self.num_res_blocks}")
        _check(0.0 <= self.dropout_p < 1.0, f"dropout_p must be in [0, 1), got {self.dropout_p}")
        _check(self.quant_conv_ks >= 1 and self.quant_conv_ks % 2 == 1,
               f"quant_conv_ks must be an odd kernel size >= 1, got {self.quant_conv_ks}")
        _check(self.quant_conv_ks == 1 or (self.enc_type, self.dec_type) == ("cnn", "cnn"),
               f"quant_conv_ks {self.quant_conv_ks} needs a conv encoder and decoder (enc_type and dec_type cnn); "
               "on the ViT path quant_conv and post_quant_conv act on tokens and are 1x1")

    # derived sizes -------------------------------------------------------------------------------------------
    @property
    def latent_side(self) -> int:
        return math.isqrt(self.num_latent_tokens)

    @property
    def num_scales(self) -> int:
        return len(self.v_patch_nums)

    @property
    def tokens_per_branch(self) -> int:
        """L: codes per branch over all scales (286 for the released models)."""
        return sum(p * p for p in self.v_patch_nums)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("v_patch_nums", "encoder_ch_mult", "decoder_ch_mult"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TokenizerConfig":
        return _from_dict(cls, d)


@dataclass(frozen=True)
class GeneratorConfig:
    """The VAR transformer that predicts all branches' codes of a scale in parallel (folded tokens)."""

    depth: int = 16
    embed_dim: int | None = None         # None: 64 * depth
    num_heads: int | None = None         # None: depth
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    cond_drop_rate: float = 0.1          # label dropout during training (enables classifier-free guidance)
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float | None = None  # None: 0.1 * depth / 24
    norm_eps: float = 1e-6
    shared_aln: bool = False
    attn_l2_norm: bool = True
    p_drop: float = 0.0                  # token masking during training (0 disables it and its empty embedding)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def __post_init__(self) -> None:
        if isinstance(self.tokenizer, dict):
            set_fields(self, tokenizer=TokenizerConfig.from_dict(self.tokenizer))
        elif isinstance(self.tokenizer, str):
            set_fields(self, tokenizer=tokenizer_preset(self.tokenizer))
        if self.embed_dim is None:
            set_fields(self, embed_dim=64 * self.depth)
        if self.num_heads is None:
            set_fields(self, num_heads=self.depth)
        if self.drop_path_rate is None:
            set_fields(self, drop_path_rate=0.1 * self.depth / 24)
        _check(self.depth >= 1, f"depth must be >= 1, got {self.depth}")
        _check(self.embed_dim % self.num_heads == 0,
               f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        _check(self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}")
        _check(0.0 <= self.cond_drop_rate < 1.0, f"cond_drop_rate must be in [0, 1), got {self.cond_drop_rate}")
        _check(0.0 <= self.p_drop < 1.0, f"p_drop must be in [0, 1), got {self.p_drop}")
        _check(not self.shared_aln, "shared_aln=True is not supported (no released model uses it)")

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.tokenizer.v_patch_nums

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tokenizer"] = self.tokenizer.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GeneratorConfig":
        return _from_dict(cls, d)


def _from_dict(cls, d: dict[str, Any]):
    """``cls(**d)`` for a dict read from a file (config.json, a checkpoint): unknown fields and values of the wrong
    type are a ``ConfigError`` naming the field, never a TypeError deep inside a model."""
    _check(isinstance(d, dict), f"a {cls.__name__} must be a mapping of fields to values, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    _check(not unknown, f"unknown {cls.__name__} field(s): {unknown}")
    hints = typing.get_type_hints(cls)
    values = {k: _typed(cls.__name__, k, v, hints[k]) for k, v in d.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as e:
        raise ConfigError(f"{cls.__name__}: impossible values ({e})") from None


def _typed(owner: str, name: str, value: Any, hint: Any) -> Any:
    """``value`` checked against a field annotation (int, float, bool, str, tuple[int, ...], dict, X | None, or a
    nested config); ints are accepted for floats and lists for tuples."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else hint
    origin = typing.get_origin(hint)
    bad = ConfigError(f"{owner}.{name}: {value!r} is not a valid {getattr(hint, '__name__', hint)}")
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise bad
    elif origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                           for v in value):
            raise bad
        value = tuple(value)
    elif origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise bad
    elif dataclasses.is_dataclass(hint):
        if not isinstance(value, (dict, str, hint)):
            raise bad
    return value


# presets ------------------------------------------------------------------------------------------------------
# Presets are keyword sets, so an override of one field re-derives the fields that depend on it.
_FULL_VIT = dict(encoder_model="vit_base_patch14_dinov2.lvd142m", decoder_model="vit_base_patch14_dinov2.lvd142m")
_SMALL_VIT = dict(encoder_model="vit_small_patch14_dinov2.lvd142m", decoder_model="vit_small_patch14_dinov2.lvd142m")

# the conv network's levels of the authors' ``vq_model`` choices (their msvq_model.VQ_16 / VQ_8)
VQ_MODEL_CH_MULT: dict[str, tuple[int, ...]] = {"VQ-16": (1, 1, 2, 2, 4), "VQ-8": (1, 2, 2, 4)}
_CONV = dict(enc_type="cnn", dec_type="cnn", ch=128, encoder_ch_mult=(1, 1, 2, 2, 4), decoder_ch_mult=(1, 1, 2, 2, 4),
             z_channels=256, image_size=256)
_CONV_32 = dict(enc_type="cnn", dec_type="cnn", ch=32, encoder_ch_mult=(1, 2, 2), decoder_ch_mult=(1, 2, 2),
                z_channels=32, image_size=32, codebook_embed_dim=8, num_latent_tokens=64, drop_path_rate=0.0)

TOKENIZER_PRESETS: dict[str, dict[str, Any]] = {
    # the released tokenizers (configs/tokenizer.yaml; 8192/16384 differ only in codebook_size)
    "imagefolder-4096": dict(codebook_size=4096, **_FULL_VIT),
    "imagefolder-8192": dict(codebook_size=8192, **_FULL_VIT),
    "imagefolder-16384": dict(codebook_size=16384, **_FULL_VIT),
    # the official test-vector configuration (reference tiny_config.json): 64 px, 2 blocks of width 64
    "tiny": dict(codebook_size=64, codebook_embed_dim=8, v_patch_nums=(1, 2, 3, 4), num_latent_tokens=16,
                 image_size=64, patch_size=8, vit_kwargs={"embed_dim": 64, "depth": 2, "num_heads": 2}, **_SMALL_VIT),
    # a CPU-trainable model: 64 px, 4 blocks of width 192, 8x8 latents per branch
    "small": dict(codebook_size=512, codebook_embed_dim=16, v_patch_nums=(1, 2, 3, 4, 6, 8), num_latent_tokens=64,
                  image_size=64, patch_size=8, vit_kwargs={"embed_dim": 192, "depth": 4, "num_heads": 3}, **_SMALL_VIT),
    # the authors' conv network (VQ-16: 16x down, 256 px -> 16x16) with two branches as channel groups of the
    # encoder map, VAR's ten scales; the teacher is DINOv2 ViT-S, whose width the authors' CNN path assumes
    "cnn-4096": dict(codebook_size=4096, **_CONV, num_latent_tokens=256, v_patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
                     **_SMALL_VIT),
    # the official CNN test-vector configuration (reference cnn_tiny/config.json): one branch, 32 px -> 8x8
    "cnn-tiny": dict(**_CONV_32, product_quant=1, codebook_size=64, v_patch_nums=(1, 2, 4, 8), codebook_drop=0.0,
                     start_drop=1, semantic_guide="none", **_SMALL_VIT),
    # a CPU-trainable conv tokenizer: 32 px -> 8x8, widths 32/64, two branches of 256 codes, six scales
    "cnn-small": dict(**_CONV_32, codebook_size=256, v_patch_nums=(1, 2, 3, 4, 6, 8), start_drop=2,
                      semantic_guide="none", **_SMALL_VIT),
}

# VAR's own VQVAE (FoundationVision/VAR, vae_ch160v4096z32.pth): the LDM vq-f16 conv network (16x down), one
# branch, Euclidean code search, 3x3 quant_conv / post_quant_conv, no quantizer dropout and no semantic teacher
VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
_VAR_VQVAE = dict(enc_type="cnn", dec_type="cnn", encoder_ch_mult=(1, 1, 2, 2, 4), decoder_ch_mult=(1, 1, 2, 2, 4),
                  num_res_blocks=2, product_quant=1, codebook_l2_norm=False, quant_conv_ks=3, share_quant_resi=4,
                  quant_resi=0.5, commit_loss_beta=0.25, codebook_drop=0.0, start_drop=1, semantic_guide="none",
                  drop_path_rate=0.0, **_SMALL_VIT)
TOKENIZER_PRESETS.update({
    "var-vqvae": dict(**_VAR_VQVAE, ch=160, codebook_size=4096, codebook_embed_dim=32, z_channels=32,
                      v_patch_nums=VAR_PATCH_NUMS, num_latent_tokens=256, image_size=256),
    # the reference test-vector configuration (reference var_tiny/config.json): 64 px, scales 1-4, 64 codes of 8
    "var-vqvae-tiny": dict(**_VAR_VQVAE, ch=32, codebook_size=64, codebook_embed_dim=8, z_channels=8,
                           v_patch_nums=(1, 2, 3, 4), num_latent_tokens=16, image_size=64),
})

GENERATOR_PRESETS: dict[str, dict[str, Any]] = {
    **{f"d{d}": dict(depth=d, tokenizer="imagefolder-4096") for d in (16, 17, 20, 24, 30)},
    # VAR's released generators (var_d16.pth ... var_d30.pth) on its VQVAE; VAR's tiny reference set
    **{f"var-d{d}": dict(depth=d, tokenizer="var-vqvae") for d in (16, 20, 24, 30)},
    "var-tiny": dict(depth=2, embed_dim=128, num_heads=2, num_classes=10, tokenizer="var-vqvae-tiny"),
    "tiny": dict(depth=2, embed_dim=128, num_heads=2, num_classes=10, tokenizer="tiny"),
    "small": dict(depth=4, embed_dim=256, num_heads=4, num_classes=10, tokenizer="small"),
}


def tokenizer_preset(name: str, **overrides: Any) -> TokenizerConfig:
    """A named tokenizer configuration, optionally with fields overridden."""
    if name not in TOKENIZER_PRESETS:
        raise ConfigError(f"unknown tokenizer preset {name!r}; choose one of {sorted(TOKENIZER_PRESETS)}")
    return TokenizerConfig(**{**TOKENIZER_PRESETS[name], **overrides})


def generator_preset(name: str, **overrides: Any) -> GeneratorConfig:
    """A named generator configuration (with its tokenizer configuration), optionally with fields overridden."""
    if name not in GENERATOR_PRESETS:
        raise ConfigError(f"unknown generator preset {name!r}; choose one of {sorted(GENERATOR_PRESETS)}")
    return GeneratorConfig(**{**GENERATOR_PRESETS[name], **overrides})


def _model_config(model_cls, preset_fn, preset: str, model_vals: dict[str, Any]):
    try:
        return preset_fn(preset, **model_vals) if preset else model_cls(**model_vals)
    except TypeError as e:
        raise ConfigError(f"model configuration: {e}") from None


def tokenizer_model_config(preset: str, model_vals: dict[str, Any]) -> TokenizerConfig:
    """``preset`` (none: the defaults) with the fields ``model_vals``; an unknown field is a ``ConfigError``."""
    return _model_config(TokenizerConfig, tokenizer_preset, preset, model_vals)


def generator_model_config(preset: str, model_vals: dict[str, Any]) -> GeneratorConfig:
    """``preset`` (none: the defaults) with the fields ``model_vals``; an unknown field is a ``ConfigError``."""
    return _model_config(GeneratorConfig, generator_preset, preset, model_vals)
