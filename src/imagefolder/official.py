"""Reading and writing the official ImageFolder / VAR checkpoint formats, strictly and safely.

* Tokenizer checkpoints (``msvq_train.py``): ``{"model", "ema", "optimizer", "steps", "args": argparse.Namespace}``;
  consumers prefer ``"ema"`` over ``"model"`` over ``"state_dict"``, as the authors' tools do.
* VAR checkpoints (``train.py``): ``{"epoch", "iter", "args": OrderedDict, "trainer": {"config", "var_wo_ddp",
  "vae_local", "var_opt"}}``; ``vae_local`` holds the tokenizer.

Pickles are opened with ``torch.load(weights_only=True)`` and an allowlist of exactly ``argparse.Namespace``, so
a checkpoint can never run code. Every official key must be consumed and every shape must match; constant buffers
the official models store (level ids, the attention mask, zero key bias) are checked against ours by value.
"""
from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .config import VQ_MODEL_CH_MULT, ConfigError, GeneratorConfig, TokenizerConfig, tokenizer_preset
from .errors import CheckpointError
from .models.generator import block_causal_mask, scale_levels
from .models.vit import level_ids


# safe reading ---------------------------------------------------------------------------------------------------
def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` that can only build tensors, containers, primitives and ``argparse.Namespace``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):  # torch zip archive, or a legacy pickle
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch.save archive nor a pickle)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        banned = next((line for line in lines if "Unsupported global" in line or "GLOBAL" in line), None)
        if banned is not None:  # a pickle that asks to build an object outside the allowlist
            raise CheckpointError(f"{path}: refused to load: it asks to build objects that plain weights never "
                                  f"need ({banned[:160]})") from None
        after = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line.endswith("error:")]
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({(after or lines or [''])[0][:160]})") from None
    except Exception as e:  # the unpickler fails in many ways on garbage (IndexError, EOFError, RuntimeError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first[:200]})") from None


def _args_dict(args: Any) -> dict[str, Any]:
    if isinstance(args, argparse.Namespace):
        return vars(args)
    if isinstance(args, Mapping):
        return dict(args)
    return {}


# configs from official args -------------------------------------------------------------------------------------
_TOKENIZER_ARG_FIELDS = ("codebook_size", "codebook_embed_dim", "product_quant", "v_patch_nums", "num_latent_tokens",
                         "encoder_model", "decoder_model", "abs_pos_embed", "share_quant_resi", "codebook_drop",
                         "start_drop", "commit_loss_beta", "semantic_guide", "half_sem", "sem_loss_weight",
                         "sem_loss_scale", "clip_norm", "enc_type", "dec_type", "encoder_ch_mult", "decoder_ch_mult",
                         "z_channels", "dropout_p", "num_res_blocks", "codebook_l2_norm")  # num_res_blocks: ours (official: 2)


def tokenizer_config_from_args(args: Any) -> TokenizerConfig:
    """The tokenizer configuration described by official ``args`` (tokenizer Namespace or VAR OrderedDict).

    The official model is hard-wired to 256 px, patch 16 and the named timm model's sizes; the reference test
    checkpoints add ``img_size``, ``patch_size`` and ``vit_kwargs``, which are honoured when present and only then.
    """
    a = _args_dict(args)
    kw = {k: a[k] for k in _TOKENIZER_ARG_FIELDS if k in a and a[k] is not None}
    if "img_size" in a or "vit_kwargs" in a:
        kw.update(image_size=a.get("img_size", 256), patch_size=a.get("patch_size", 16),
                  vit_kwargs=a.get("vit_kwargs") or {})
    if "cnn" in (kw.get("enc_type"), kw.get("dec_type")):
        # the authors' VQModel never passes ``ch`` to its conv networks: real checkpoints are 128 wide; a conv
        # network works at the trainer's image_size, and its levels come from vq_model unless args list them
        kw.update(ch=int(a.get("ch") or 128), image_size=int(a.get("image_size") or kw.get("image_size", 256)))
        levels = VQ_MODEL_CH_MULT.get(a.get("vq_model") or "VQ-16")
        if levels is None:
            raise CheckpointError(f"the checkpoint's vq_model {a.get('vq_model')!r} is none of "
                                  f"{sorted(VQ_MODEL_CH_MULT)}")
        for key in ("encoder_ch_mult", "decoder_ch_mult"):
            kw.setdefault(key, levels)
    if kw.get("semantic_guide") not in (None, "dinov2"):
        kw["semantic_guide"] = "none"
    try:
        return TokenizerConfig(**kw)
    except ConfigError as e:
        raise CheckpointError(f"the checkpoint's args describe an unsupported tokenizer: {e}") from None


def generator_config_from_args(args: Any, tokenizer: TokenizerConfig) -> GeneratorConfig:
    """The generator configuration described by the official VAR ``args`` (``build_vae_var`` rules)."""
    a = _args_dict(args)
    if "depth" not in a:
        raise CheckpointError("the VAR checkpoint's args do not say the model depth")
    patch_nums = tuple(a.get("patch_nums") or ())
    if patch_nums and patch_nums != tokenizer.v_patch_nums:
        raise CheckpointError(f"VAR patch_nums {patch_nums} differ from the tokenizer's v_patch_nums "
                              f"{tokenizer.v_patch_nums}")
    return GeneratorConfig(depth=int(a["depth"]), p_drop=float(a.get("p_drop", 0.0) or 0.0),
                           attn_l2_norm=bool(a.get("anorm", True)), shared_aln=bool(a.get("saln", False)),
                           tokenizer=tokenizer)


# key maps -------------------------------------------------------------------------------------------------------
# (official pattern, our replacement); applied in order
_TOKENIZER_KEYMAP = [
    (re.compile(r"^decoder\.to_pixel\.model\."), "decoder.to_pixel."),
    (re.compile(r"^quantize\."), "quantizes.0."),                                       # product_quant 1
    (re.compile(r"^(quantizes\.\d+\.quant_resi)\.qresi\."), r"\1.qresi_ls.0."),          # PhiShared
    (re.compile(r"^(quantizes\.\d+\.quant_resi)\.(\d+)\."), r"\1.qresi_ls.\2."),         # PhiNonShared
]
_TOKENIZER_CONSTANTS = ("encoder.lvl1LC", "decoder.lvl1LC")
_ZERO_K_BIAS = re.compile(r"^blocks\.\d+\.attn\.zero_k_bias$")


def _rename(key: str, keymap) -> str:
    for pattern, repl in keymap:
        key = pattern.sub(repl, key)
    return key


def _official_constant(model: nn.Module, key: str) -> torch.Tensor | None:
    """The value our model implies for a constant buffer stored by the official code (None if not ours)."""
    if key in _TOKENIZER_CONSTANTS:
        part = getattr(model, key.split(".")[0])
        return level_ids(part.level_sizes) if hasattr(part, "level_sizes") else None
    if key == "lvl_1L":
        return scale_levels(model.patch_nums)
    if key == "attn_bias_for_masking":
        return block_causal_mask(model.patch_nums)
    if _ZERO_K_BIAS.match(key):
        return torch.zeros(model.config.embed_dim)
    return None


def _check_constant(model: nn.Module, key: str, value: torch.Tensor, where: str) -> None:
    ours = _official_constant(model, key)
    if ours is None:
        raise CheckpointError(f"{where}: unexpected key {key!r} (this model configuration has no such buffer)")
    got = value
    if key == "attn_bias_for_masking" and value.ndim == 4 and value.shape[-1] > ours.shape[-1]:
        L = ours.shape[-1]  # saved with xformers installed: padded to a multiple of 8
        if value.shape[-1] != (L + 7) // 8 * 8:
            raise CheckpointError(f"{where}: {key} has shape {tuple(value.shape)}, expected (1, 1, {L}, {L}) "
                                  f"or padded to {(L + 7) // 8 * 8}")
        got = value[..., :L, :L]
    if tuple(got.shape) != tuple(ours.shape):
        raise CheckpointError(f"{where}: {key} has shape {tuple(value.shape)}, expected {tuple(ours.shape)}")
    if not torch.equal(got.to(ours.dtype).cpu(), ours.cpu()):
        raise CheckpointError(f"{where}: constant buffer {key} does not match this model configuration")


def load_official_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Strictly load an official state dict into our Tokenizer or Generator (every key, every shape)."""
    keymap = _TOKENIZER_KEYMAP if _is_tokenizer(model) else []
    ours = model.state_dict()  # a Generator's own weights; its tokenizer is loaded separately (trainer.vae_local)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: entry {key!r} is a {type(value).__name__}, not a tensor")
        new = _rename(key, keymap)
        if new not in ours:
            _check_constant(model, key, value, where)
            continue
        renamed[new] = value
    missing = [k for k in ours if k not in renamed]
    if missing:
        shown = ", ".join(_official_name(k, model) for k in missing[:8])
        raise CheckpointError(f"{where}: missing {len(missing)} key(s): {shown}{' ...' if len(missing) > 8 else ''}")
    for key, value in renamed.items():
        if tuple(value.shape) != tuple(ours[key].shape):
            raise CheckpointError(f"{where}: {_official_name(key, model)} has shape {tuple(value.shape)} in the "
                                  f"checkpoint but {tuple(ours[key].shape)} in the model")
        if value.is_floating_point() != ours[key].is_floating_point():
            raise CheckpointError(f"{where}: {_official_name(key, model)} has dtype {value.dtype}, "
                                  f"expected {ours[key].dtype}")
    renamed = {k: v.to(ours[k].dtype) for k, v in renamed.items()}
    model.load_state_dict(renamed, strict=True, assign=True)


def _is_tokenizer(model: nn.Module) -> bool:
    return hasattr(model, "quantizes")


def _official_name(key: str, model: nn.Module) -> str:
    if _is_tokenizer(model) and key.startswith("decoder.to_pixel."):
        return key.replace("decoder.to_pixel.", "decoder.to_pixel.model.", 1)
    if _is_tokenizer(model) and model.num_branches == 1 and key.startswith("quantizes.0."):
        return key.replace("quantizes.0.", "quantize.", 1)  # the official single-branch model's name
    return key


def to_official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our Tokenizer or Generator as the official state dict (names, constant buffers), ready for the authors' code.

    For a Generator this is ``ckpt['trainer']['var_wo_ddp']`` (its tokenizer is ``vae_local``, exported separately).
    """
    if _is_tokenizer(model):
        if model.config.pattern_scales:
            raise ValueError(f"the authors' code has no pattern scales (pattern_scales {model.config.pattern_scales}): "
                             "this tokenizer exists only in our format")
        sd = {_official_name(k, model): v for k, v in model.state_dict().items()}
        for key in _TOKENIZER_CONSTANTS:
            value = _official_constant(model, key)
            if value is not None:
                sd[key] = value
        return sd
    sd = dict(model.state_dict())
    sd["lvl_1L"] = scale_levels(model.patch_nums)
    sd["attn_bias_for_masking"] = block_causal_mask(model.patch_nums)
    for i in range(len(model.blocks)):
        sd[f"blocks.{i}.attn.zero_k_bias"] = torch.zeros(model.config.embed_dim)
    return sd


# whole checkpoints ----------------------------------------------------------------------------------------------
def is_var_checkpoint(ckpt: Any) -> bool:
    return isinstance(ckpt, Mapping) and isinstance(ckpt.get("trainer"), Mapping) and "var_wo_ddp" in ckpt["trainer"]


def tokenizer_weights(ckpt: Any, where: str) -> Mapping[str, torch.Tensor]:
    """The tokenizer state dict inside an official tokenizer or VAR checkpoint (EMA weights first)."""
    if is_var_checkpoint(ckpt):
        if "vae_local" not in ckpt["trainer"]:
            raise CheckpointError(f"{where}: VAR checkpoint without trainer.vae_local (tokenizer weights)")
        return ckpt["trainer"]["vae_local"]
    if isinstance(ckpt, Mapping):
        for key in ("ema", "model", "state_dict"):
            if isinstance(ckpt.get(key), Mapping):
                return ckpt[key]
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return ckpt  # a bare state dict
    raise CheckpointError(f"{where}: not an ImageFolder checkpoint (no 'ema', 'model', 'state_dict' or "
                          "'trainer.vae_local' weights)")


def tokenizer_config_from_checkpoint(ckpt: Any, where: str) -> TokenizerConfig:
    args = ckpt.get("args") if isinstance(ckpt, Mapping) else None
    if args is not None:
        return tokenizer_config_from_args(args)
    weights = tokenizer_weights(ckpt, where)
    emb = weights.get("quantizes.0.embedding.weight")
    preset = f"imagefolder-{emb.shape[0]}" if emb is not None else ""
    try:
        return tokenizer_preset(preset)
    except ConfigError:
        raise CheckpointError(f"{where}: the checkpoint has no 'args'; pass its tokenizer configuration") from None
