"""VAR's own release (FoundationVision/VAR): the VQVAE ``vae_ch160v4096z32.pth`` and the generators
``var_d16.pth`` ... ``var_d30.pth``, read and written strictly.

Both files are plain state dicts (no wrapper, no args), so the configuration is read off the weights:

* VQVAE: ``ch`` = width of ``encoder.conv_in``, the levels from the encoder's blocks, ``z_channels`` = code size =
  ``quant_conv`` width, the codebook size from ``quantize.embedding``, the phi count from ``quantize.quant_resi``.
  The scale schedule is not in the file (VAR passes ``patch_nums`` to the builder): it defaults to the release's
  1, 2, 3, 4, 5, 6, 8, 10, 13, 16 (256 px); a generator file says its own (``lvl_1L``), and ``v_patch_nums=``
  overrides it.
* VAR: depth = number of blocks, width from ``pos_1LC``, heads from ``scale_mul_1H11``, classes from ``class_emb``,
  the scale schedule from ``lvl_1L``. The VAR file does not hold its VQVAE: loading needs the tokenizer too.

Our conv encoder / decoder are VAR's (LDM vq-f16) networks under the ImageFolder authors' names; the VQVAE's names
map one to one (``down.{i}.block.{j}`` = ``conv_blocks.{i}.res.{j}``, ``mid.block_1 / attn_1 / block_2`` =
``mid.0 / 1 / 2``, the decoder's ``up.{i}`` = ``conv_blocks.{levels - 1 - i}``), except that VAR's attention
blocks hold q, k and v in one fused ``qkv`` 1x1 conv (3C output channels, q first), which is split on loading and
joined on export. The generator's names are ours already (``official.load_official_state_dict``).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from .config import VAR_PATCH_NUMS, ConfigError, GeneratorConfig, TokenizerConfig, tokenizer_preset
from .errors import CheckpointError

VQVAE_PRESET = "var-vqvae"
_QKV = re.compile(r"^(.*\.(?:attn\.\d+|mid\.1|mid\.attn_1))\.(q|k|v)\.(weight|bias)$")


# recognising the files -----------------------------------------------------------------------------------------
def _tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def is_vqvae_state(obj: Any) -> bool:
    """A plain state dict of VAR's VQVAE (its LDM-named encoder and ``quantize.embedding``)."""
    return _tensor_dict(obj) and "quantize.embedding.weight" in obj and "encoder.conv_in.weight" in obj \
        and any(k.startswith("encoder.down.") for k in obj)


def is_generator_state(obj: Any) -> bool:
    """A plain state dict of a VAR generator (VAR's release files; ImageFolder's VAR files wrap theirs in
    ``trainer.var_wo_ddp`` and carry their tokenizer)."""
    return _tensor_dict(obj) and "class_emb.weight" in obj and "word_embed.weight" in obj \
        and any(k.startswith("blocks.") for k in obj)


def fits_release(cfg: TokenizerConfig) -> str | None:
    """None if VAR's VQVAE format can hold a tokenizer of this configuration, else the reason it cannot."""
    want = dict(enc_type="cnn", dec_type="cnn", product_quant=1, semantic_guide="none", num_res_blocks=2,
                pattern_scales=0)
    for key, value in want.items():
        if getattr(cfg, key) != value:
            return f"{key} is {getattr(cfg, key)!r} (VAR's VQVAE: {value!r})"
    if cfg.encoder_ch_mult != cfg.decoder_ch_mult:
        return "the encoder and decoder levels differ (VAR's VQVAE: the same ch_mult)"
    if cfg.z_channels != cfg.codebook_embed_dim:
        return f"z_channels {cfg.z_channels} != codebook_embed_dim {cfg.codebook_embed_dim} (VAR: both Cvae)"
    return None


# configurations from weights -------------------------------------------------------------------------------------
def _shape(state: Mapping[str, torch.Tensor], key: str, where: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{where}: missing key {key!r}")
    return tuple(state[key].shape)


def vqvae_config(state: Mapping[str, torch.Tensor], where: str,
                 v_patch_nums: tuple[int, ...] | None = None) -> TokenizerConfig:
    """The tokenizer configuration of a VAR VQVAE state dict (scales: ``v_patch_nums`` or the release's)."""
    ch = _shape(state, "encoder.conv_in.weight", where)[0]
    V, Cvae = _shape(state, "quantize.embedding.weight", where)
    levels = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k))), default=-1)
    ch_mult = tuple(_shape(state, f"encoder.down.{i}.block.0.conv1.weight", where)[0] // ch for i in range(levels))
    blocks = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))),
                     default=-1)
    if not levels or not blocks:
        raise CheckpointError(f"{where}: missing key 'encoder.down.0.block.0.conv1.weight'")
    ks = _shape(state, "quant_conv.weight", where)[-1]
    phis = {m.group(1) for k in state if (m := re.match(r"quantize\.quant_resi\.(qresi_ls\.\d+|qresi|\d+)\.", k))}
    if any(p.startswith("qresi_ls") for p in phis):
        share = len(phis)
    elif phis == {"qresi"}:
        share = 1
    else:
        share = 0  # one phi per scale (PhiNonShared), or none (quant_resi 0: not readable, VAR uses 0.5)
    pn = tuple(v_patch_nums or VAR_PATCH_NUMS)
    side = pn[-1]
    try:
        return tokenizer_preset(VQVAE_PRESET, ch=ch, encoder_ch_mult=ch_mult, decoder_ch_mult=ch_mult,
                                num_res_blocks=blocks, codebook_size=V, codebook_embed_dim=Cvae, z_channels=Cvae,
                                quant_conv_ks=ks, share_quant_resi=share, v_patch_nums=pn,
                                num_latent_tokens=side * side, image_size=side * 2 ** (levels - 1))
    except ConfigError as e:
        raise CheckpointError(f"{where}: the weights describe an unsupported VQVAE: {e}") from None


def generator_patch_nums(state: Mapping[str, torch.Tensor], where: str) -> tuple[int, ...]:
    """The scale sides of a VAR state dict, from its ``lvl_1L`` buffer (the scale index of every token)."""
    if "lvl_1L" not in state:
        raise CheckpointError(f"{where}: missing key 'lvl_1L' (the scale of every token)")
    levels = state["lvl_1L"].reshape(-1).long()
    counts = torch.bincount(levels).tolist() if levels.numel() else []
    sides = [math.isqrt(n) for n in counts]
    if not counts or any(s * s != n for s, n in zip(sides, counts)) or \
            not torch.equal(levels, torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))):
        raise CheckpointError(f"{where}: lvl_1L is not a sequence of square scales")
    return tuple(sides)


def generator_config(state: Mapping[str, torch.Tensor], where: str, tokenizer: TokenizerConfig) -> GeneratorConfig:
    """The generator configuration of a VAR state dict (``build_vae_var``'s rules), on ``tokenizer``."""
    if any(k.startswith("shared_ada_lin.") for k in state):
        raise CheckpointError(f"{where}: shared_aln models (shared_ada_lin) are not supported (no release uses one)")
    patch_nums = generator_patch_nums(state, where)
    if patch_nums != tokenizer.v_patch_nums:
        raise CheckpointError(f"{where}: the generator's scales {patch_nums} differ from the tokenizer's "
                              f"{tokenizer.v_patch_nums}")
    C, Cvae = _shape(state, "word_embed.weight", where)
    if Cvae != tokenizer.product_quant * tokenizer.codebook_embed_dim:
        given = tokenizer.product_quant * tokenizer.codebook_embed_dim
        raise CheckpointError(f"{where}: word_embed.weight takes {Cvae} channels but the tokenizer gives {given}: not "
                              "this generator's tokenizer")
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    l2 = "blocks.0.attn.scale_mul_1H11" in state
    heads = _shape(state, "blocks.0.attn.scale_mul_1H11", where)[1] if l2 else depth
    hidden = _shape(state, "blocks.0.ffn.fc1.weight", where)[0]
    classes = _shape(state, "class_emb.weight", where)[0] - 1
    try:
        return GeneratorConfig(depth=depth, embed_dim=C, num_heads=heads, mlp_ratio=hidden / C, num_classes=classes,
                               attn_l2_norm=l2, tokenizer=tokenizer)
    except ConfigError as e:
        raise CheckpointError(f"{where}: the weights describe an unsupported generator: {e}") from None


# VQVAE names -------------------------------------------------------------------------------------------------------
_MID = {"block_1": "0", "attn_1": "1", "block_2": "2"}
_MID_BACK = {v: k for k, v in _MID.items()}


def _release_to_ours(key: str, levels: int) -> str:
    key = re.sub(r"^quantize\.", "quantizes.0.", key)
    key = re.sub(r"^(encoder|decoder)\.mid\.(block_1|attn_1|block_2)\.", lambda m: f"{m[1]}.mid.{_MID[m[2]]}.", key)
    key = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.conv_blocks.\1.res.", key)
    key = re.sub(r"^encoder\.down\.(\d+)\.", r"encoder.conv_blocks.\1.", key)
    key = re.sub(r"^decoder\.up\.(\d+)\.block\.", lambda m: f"decoder.conv_blocks.{levels - 1 - int(m[1])}.res.", key)
    return re.sub(r"^decoder\.up\.(\d+)\.", lambda m: f"decoder.conv_blocks.{levels - 1 - int(m[1])}.", key)


def _ours_to_release(key: str, levels: int) -> str:
    key = re.sub(r"^quantizes\.0\.", "quantize.", key)
    key = re.sub(r"^(encoder|decoder)\.mid\.(\d)\.", lambda m: f"{m[1]}.mid.{_MID_BACK[m[2]]}.", key)
    key = re.sub(r"^encoder\.conv_blocks\.(\d+)\.res\.", r"encoder.down.\1.block.", key)
    key = re.sub(r"^encoder\.conv_blocks\.(\d+)\.", r"encoder.down.\1.", key)
    key = re.sub(r"^decoder\.conv_blocks\.(\d+)\.res\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block.", key)
    key = re.sub(r"^decoder\.conv_blocks\.(\d+)\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.", key)
    m = _QKV.match(key)
    return f"{m[1]}.qkv.{m[3]}" if m else key


def vqvae_from_release(state: Mapping[str, torch.Tensor], levels: int, where: str) -> dict[str, torch.Tensor]:
    """VAR's VQVAE state dict under our names (fused qkv split into q, k, v)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _release_to_ours(key, levels)
        if new.endswith((".qkv.weight", ".qkv.bias")):
            if value.shape[0] % 3:
                raise CheckpointError(f"{where}: {key} has shape {tuple(value.shape)}: not 3 x channels (q, k, v)")
            stem, kind = new.rsplit(".qkv.", 1)
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"{stem}.{name}.{kind}"] = part
        else:
            out[new] = value
    return out


def vqvae_state(tokenizer: nn.Module) -> dict[str, torch.Tensor]:
    """Our tokenizer as VAR's VQVAE state dict (``VQVAE.load_state_dict(..., strict=True)`` takes it)."""
    why = fits_release(tokenizer.config)
    if why is not None:
        raise CheckpointError(f"VAR's VQVAE format cannot hold this tokenizer: {why}")
    levels = len(tokenizer.config.decoder_ch_mult)
    sd = tokenizer.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        m = _QKV.match(key)
        if m and m[2] != "q":
            continue
        if m:  # join q, k, v into VAR's qkv conv
            value = torch.cat([sd[f"{m[1]}.{n}.{m[3]}"] for n in "qkv"], dim=0)
        out[_ours_to_release(key, levels)] = value.detach().clone().contiguous()
    return out


def release_name(key: str, tokenizer: nn.Module) -> str:
    """The VAR VQVAE name of one of our tokenizer's keys (for messages)."""
    return _ours_to_release(key, len(tokenizer.config.decoder_ch_mult))


def load_vqvae_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Strictly load VAR's VQVAE state dict into our (possibly meta-device) tokenizer: every key, every shape.

    ``quantize.ema_vocab_hit_SV`` (code-usage statistics, unused at inference) is taken only when it has one row per
    scale; otherwise the model keeps its own, as VAR's ``VQVAE.load_state_dict`` does.
    """
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: entry {key!r} is a {type(value).__name__}, not a tensor")
    levels = len(model.config.decoder_ch_mult)
    ours = model.state_dict()
    renamed = vqvae_from_release(state, levels, where)
    unexpected = [k for k in state if not any(n in ours for n in _ours_names(k, levels))]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{where}: unexpected key {unexpected[0]!r}{more}: not this VQVAE configuration")
    ema = "quantizes.0.ema_vocab_hit_SV"
    if ema in renamed and ema in ours and renamed[ema].shape[0] != ours[ema].shape[0]:
        renamed[ema] = torch.zeros(ours[ema].shape, dtype=ours[ema].dtype)
    missing = [k for k in ours if k not in renamed]
    if missing:
        names = sorted({release_name(k, model) for k in missing})
        more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
        raise CheckpointError(f"{where}: missing key {names[0]!r}{more}")
    for key, value in renamed.items():
        if tuple(value.shape) != tuple(ours[key].shape):
            name = release_name(key, model)
            want = tuple(ours[key].shape)
            if name.endswith((".qkv.weight", ".qkv.bias")):
                value, want = state[name], (3 * want[0], *want[1:])
            raise CheckpointError(f"{where}: {name} has shape {tuple(value.shape)} in the file but {want} in the "
                                  "model")
        if value.is_floating_point() != ours[key].is_floating_point():
            raise CheckpointError(f"{where}: {release_name(key, model)} has dtype {value.dtype}, "
                                  f"expected {ours[key].dtype}")
    model.load_state_dict({k: v.to(ours[k].dtype) for k, v in renamed.items()}, strict=True, assign=True)


def _ours_names(release_key: str, levels: int) -> list[str]:
    new = _release_to_ours(release_key, levels)
    if new.endswith((".qkv.weight", ".qkv.bias")):
        stem, kind = new.rsplit(".qkv.", 1)
        return [f"{stem}.{n}.{kind}" for n in "qkv"]
    return [new]
