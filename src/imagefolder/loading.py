"""``load_tokenizer`` / ``load_generator``: one entry point for presets, our checkpoints and official checkpoints,
and ``convert`` between the official format and ours."""
from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ours
from .config import (GENERATOR_PRESETS, TOKENIZER_PRESETS, GeneratorConfig, TokenizerConfig, generator_preset,
                     tokenizer_preset)
from .models.generator import Generator
from .models.tokenizer import Tokenizer
from .official import (CheckpointError, generator_config_from_args, is_var_checkpoint, load_official_state_dict,
                       safe_torch_load, to_official_state_dict, tokenizer_config_from_checkpoint, tokenizer_weights)
from . import hub, var_release
from .releases import release_for_file

TokenizerSpec = Tokenizer | TokenizerConfig | str | Path


def _empty(factory, *args):
    """Build a model on the meta device: no memory, no random init; loading assigns the real tensors."""
    with torch.device("meta"):
        return factory(*args)


def _is_preset(spec: Any, presets: dict) -> bool:
    return isinstance(spec, str) and spec in presets and not Path(spec).exists()


def load_tokenizer(spec: TokenizerSpec, *, config: TokenizerConfig | None = None,
                   pretrained_backbone: bool | str | Path = False,
                   v_patch_nums: tuple[int, ...] | None = None) -> Tokenizer:
    """A tokenizer in eval mode from a preset name (random init, or DINOv2-initialised with
    ``pretrained_backbone``), one of our checkpoint directories, an official tokenizer checkpoint (EMA weights
    first), an official ImageFolder VAR checkpoint (its ``trainer.vae_local``) or VAR's released VQVAE
    (``vae_ch160v4096z32.pth``, a plain state dict). Any of these files or folders may also be on the Hugging Face
    hub: a released short name (``imagenet-4096``, ``var-imagenet-vqvae``: ``releases.RELEASES``),
    ``hf://OWNER/REPO/FILE[@REVISION]`` or ``hf://OWNER/REPO[/FOLDER]`` (``hub.py``: the hub client's cache).

    ``config`` overrides the configuration read from an official checkpoint's args (needed only for models whose
    args do not describe their shape, such as the reference test checkpoints inside a VAR file).
    ``v_patch_nums``: the scales of a VAR VQVAE file, which does not store them (default: the release's 1, ..., 16).
    """
    if isinstance(spec, Tokenizer):
        return spec
    if isinstance(spec, TokenizerConfig):
        return Tokenizer(spec, pretrained_backbone=pretrained_backbone).eval()
    if _is_preset(spec, TOKENIZER_PRESETS):
        return Tokenizer(tokenizer_preset(spec), pretrained_backbone=pretrained_backbone).eval()
    path = Path(hub.resolve(spec))
    if ours.is_our_checkpoint(path):
        meta = ours.read_config(path)
        if meta["kind"] == "generator":  # the generator's tokenizer
            return _tokenizer_of_generator(path, ours.config_from(GeneratorConfig, meta, path), config)
        if meta["kind"] != "tokenizer":
            raise CheckpointError(f"{path}: holds a {meta['kind']!r}, not a tokenizer")
        model = _empty(Tokenizer, config or ours.config_from(TokenizerConfig, meta, path))
        ours.load_state_strict(model, ours.read_weights(path), str(path))
        return model.eval()
    if not path.exists():
        raise CheckpointError(f"no such checkpoint or preset: {spec!s} (presets: "
                              f"{', '.join(sorted(TOKENIZER_PRESETS))}){_release_hint(spec)}")
    ckpt = _not_training_state(safe_torch_load(path), path)
    if var_release.is_vqvae_state(ckpt):
        return _tokenizer_from_release(ckpt, str(path), config, v_patch_nums)
    if var_release.is_generator_state(ckpt):
        raise CheckpointError(f"{path}: a VAR generator file (plain state dict), which holds no tokenizer; its "
                              "tokenizer is VAR's VQVAE file (vae_ch160v4096z32.pth)")
    return _tokenizer_from_official(ckpt, str(path), config)


def _tokenizer_of_generator(path: Path, cfg: GeneratorConfig, config: TokenizerConfig | None = None) -> Tokenizer:
    """The tokenizer of one of our generator directories (its ``tokenizer/`` folder, or inside an older file)."""
    sub = ours.checkpoint_dir(path) / ours.TOKENIZER_DIR
    where = path
    if ours.is_our_checkpoint(sub):
        own = ours.config_from(TokenizerConfig, ours.read_config(sub), sub)
        if own != cfg.tokenizer:
            raise CheckpointError(f"{sub}: the tokenizer's configuration differs from the one its generator's "
                                  f"{ours.CONFIG_NAME} names")
        where = sub
    model = _empty(Tokenizer, config or cfg.tokenizer)
    ours.load_state_strict(model, ours.generator_weights(path, "tokenizer"), str(where))
    return model.eval()


def _release_hint(spec: Any) -> str:
    rel = release_for_file(str(spec))
    return f"; the released {rel.filename} is fetched from the hub as {rel.name!r}" if rel is not None else ""


def _tokenizer_from_release(state: Any, where: str, config: TokenizerConfig | None,
                            v_patch_nums: tuple[int, ...] | None = None) -> Tokenizer:
    model = _empty(Tokenizer, config or var_release.vqvae_config(state, where, v_patch_nums))
    var_release.load_vqvae_state(model, state, where)
    return model.eval()


_SHAPE_HINT = ("The file's args describe the tokenizer only partly (official models are 256 px ViT-B); pass its "
               "configuration (tokenizer= for load_generator / convert, config= for load_tokenizer)")


def _tokenizer_from_official(ckpt: Any, where: str, config: TokenizerConfig | None) -> Tokenizer:
    model = _empty(Tokenizer, config or tokenizer_config_from_checkpoint(ckpt, where))
    try:
        load_official_state_dict(model, tokenizer_weights(ckpt, where), where)
    except CheckpointError as e:
        if config is not None or "shape" not in str(e):
            raise
        raise CheckpointError(f"{e}. {_SHAPE_HINT}") from None
    return model.eval()


def _tokenizer_config(spec: TokenizerSpec) -> TokenizerConfig:
    if isinstance(spec, Tokenizer):
        return spec.config
    if isinstance(spec, TokenizerConfig):
        return spec
    if _is_preset(spec, TOKENIZER_PRESETS):
        return tokenizer_preset(spec)
    path = Path(hub.resolve(spec))
    if ours.is_our_checkpoint(path):
        meta = ours.read_config(path)
        return ours.config_from(GeneratorConfig, meta, path).tokenizer if meta["kind"] == "generator" \
            else ours.config_from(TokenizerConfig, meta, path)
    ckpt = safe_torch_load(path)
    if var_release.is_vqvae_state(ckpt):
        return var_release.vqvae_config(ckpt, str(path))
    return tokenizer_config_from_checkpoint(ckpt, str(path))


def _generator_config(spec: str | Path, *, tokenizer: TokenizerSpec | None = None) -> GeneratorConfig:
    """The configuration ``load_generator(spec, tokenizer=tokenizer)`` would have, read without the weights where
    the format keeps it apart (presets, our folders); an official file's configuration is inside it."""
    if _is_preset(spec, GENERATOR_PRESETS) and tokenizer is None:
        return generator_preset(spec)
    path = Path(hub.resolve(spec)) if not _is_preset(spec, GENERATOR_PRESETS) else None
    if path is not None and ours.is_our_checkpoint(path) and tokenizer is None:
        meta = ours.read_config(path)
        if meta["kind"] == "generator":
            return ours.config_from(GeneratorConfig, meta, path)
    return load_generator(spec, tokenizer=tokenizer).config


def load_generator(spec: str | Path, *, tokenizer: TokenizerSpec | None = None) -> Generator:
    """A generator (referring to its tokenizer as ``.tokenizer``) in eval mode from a preset name (random init), one of
    our checkpoint directories, an official ImageFolder VAR checkpoint (``trainer.var_wo_ddp`` +
    ``trainer.vae_local``) or one of VAR's released generators (``var_d16.pth`` ... ``var_d30.pth``); each also
    from the hub (a short name such as ``imagenet-var-4096`` or ``var-imagenet-d16``, which brings its VQVAE, or
    an ``hf://`` spec; see ``load_tokenizer``).

    ``tokenizer``: for a preset, the tokenizer to use (a Tokenizer, config, preset name or checkpoint); for VAR's
    release, required: its VQVAE (``vae_ch160v4096z32.pth``, read with the generator's scales) or a Tokenizer; for
    an official ImageFolder VAR file, what says the tokenizer's shape when the file's args cannot (its weights
    still come from the VAR file's ``vae_local``).
    """
    if _is_preset(spec, GENERATOR_PRESETS):
        cfg = generator_preset(spec)
        tok = None
        if tokenizer is not None:
            tok = load_tokenizer(tokenizer)
            cfg = generator_preset(spec, tokenizer=tok.config)
        return Generator(cfg, tok).eval()
    if tokenizer is None:
        tokenizer = hub.companion_tokenizer(spec)   # a released VAR generator's VQVAE, by its short name
    path = Path(hub.resolve(spec))
    if ours.is_our_checkpoint(path):
        meta = ours.read_config(path)
        if meta["kind"] != "generator":
            raise CheckpointError(f"{path}: holds a {meta['kind']!r}, not a generator")
        if tokenizer is not None:
            raise CheckpointError(f"{path}: our generator checkpoints carry their own tokenizer; a tokenizer is "
                                  "only taken for a preset or an official VAR file")
        cfg = ours.config_from(GeneratorConfig, meta, path)
        model = _empty(Generator, cfg, _tokenizer_of_generator(path, cfg))
        ours.load_state_strict(model, ours.generator_weights(path, "generator"), str(path))
        return model.eval()
    if not path.exists():
        raise CheckpointError(f"no such checkpoint or preset: {spec!s} (presets: "
                              f"{', '.join(sorted(GENERATOR_PRESETS))}){_release_hint(spec)}")
    ckpt = _not_training_state(safe_torch_load(path), path)
    if var_release.is_generator_state(ckpt):
        return _generator_from_release(ckpt, str(path), tokenizer)
    if var_release.is_vqvae_state(ckpt):
        raise CheckpointError(f"{path}: a VAR VQVAE (tokenizer) file, not a generator; give it as the tokenizer")
    return _generator_from_official(ckpt, str(path), tokenizer)


def _generator_from_release(state: Any, where: str, tokenizer: TokenizerSpec | None) -> Generator:
    """One of VAR's released generators (a plain state dict) on its VQVAE, given separately."""
    if tokenizer is None:
        raise CheckpointError(f"{where}: a VAR generator file holds no tokenizer: give its VQVAE "
                              "(tokenizer= / --tokenizer vae_ch160v4096z32.pth)")
    patch_nums = var_release.generator_patch_nums(state, where)
    tokenizer = hub.resolve(tokenizer)
    if isinstance(tokenizer, (str, Path)) and not _is_preset(tokenizer, TOKENIZER_PRESETS) \
            and Path(tokenizer).is_file():
        tok_ckpt = safe_torch_load(tokenizer)
        tok = (_tokenizer_from_release(tok_ckpt, str(tokenizer), None, patch_nums)
               if var_release.is_vqvae_state(tok_ckpt) else load_tokenizer(tokenizer))
    else:
        tok = load_tokenizer(tokenizer)
    cfg = var_release.generator_config(state, where, tok.config)
    model = _empty(Generator, cfg, tok)
    load_official_state_dict(model, state, where)
    return model.eval()


def _not_training_state(ckpt: Any, path: Path) -> Any:
    """``ckpt``, unless it is one of our trainers' resume checkpoints, which holds no loadable model."""
    if isinstance(ckpt, dict) and ckpt.get("format") == ours.TRAIN_FORMAT:
        raise CheckpointError(f"{path}: a {ckpt.get('kind', '')} training checkpoint (training state for resuming, "
                              f"step {ckpt.get('step', '?')}), not a model: load the run's last/ or best/ folder "
                              "(written next to checkpoints/), or resume training from it")
    return ckpt


def _generator_from_official(ckpt: Any, where: str, tokenizer: TokenizerSpec | None) -> Generator:
    if not is_var_checkpoint(ckpt):
        raise CheckpointError(f"{where}: not a VAR checkpoint (no trainer.var_wo_ddp); is it a tokenizer checkpoint?")
    tok_cfg = _tokenizer_config(tokenizer) if tokenizer is not None else None
    tok = _tokenizer_from_official(ckpt, f"{where} (trainer.vae_local)", tok_cfg)
    tok_cfg = tok.config
    var_state = ckpt["trainer"]["var_wo_ddp"]
    cfg = generator_config_from_args(ckpt.get("args", {}), tok_cfg)
    if "class_emb.weight" in var_state:  # the official builder hard-codes 1000 classes; the weights say the truth
        cfg = GeneratorConfig(**{**cfg.to_dict(), "num_classes": var_state["class_emb.weight"].shape[0] - 1})
    model = _empty(Generator, cfg, tok)
    load_official_state_dict(model, var_state, f"{where} (trainer.var_wo_ddp)")
    return model.eval()


# conversion -----------------------------------------------------------------------------------------------------
def save_tokenizer(tokenizer: Tokenizer, out_dir: str | Path) -> Path:
    return ours.save_model(tokenizer, "tokenizer", tokenizer.config, out_dir)


def save_generator(generator: Generator, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """The generator's own weights and config in ``out_dir``, its tokenizer beside them in ``out_dir/tokenizer``;
    ``extra``: more ``config.json`` entries (``class_names``)."""
    return ours.save_generator_files(generator, generator.tokenizer, out_dir, extra)


def _official_tokenizer_args(cfg: TokenizerConfig) -> dict[str, Any]:
    args = cfg.to_dict()
    args.pop("drop_path_rate")
    img, patch, vit = args.pop("image_size"), args.pop("patch_size"), args.pop("vit_kwargs")
    args.update(vq_model="VQ-16", image_size=img)
    if "dinov2" in (cfg.enc_type, cfg.dec_type) and ((img, patch) != (256, 16) or vit):
        # the official ViT model is hard-wired to 256/16: say it only when it differs
        args.update(img_size=img, patch_size=patch, vit_kwargs=vit)
    return args


def release_vqvae_path(generator_path: str | Path, tokenizer: Tokenizer | TokenizerConfig) -> Path:
    """Where ``export_var_release`` writes a generator's VQVAE: next to it, named as VAR names its file."""
    c = tokenizer.config if isinstance(tokenizer, Tokenizer) else tokenizer
    return Path(generator_path).parent / f"vae_ch{c.ch}v{c.codebook_size}z{c.codebook_embed_dim}.pth"


def export_var_release(model: Tokenizer | Generator, path: str | Path, *,
                       tokenizer_path: str | Path | None = None) -> Path:
    """Write ``model`` in VAR's release format: a plain state dict that VAR's ``build_vae_var`` models load with
    ``strict=True``. A generator's VQVAE goes to ``tokenizer_path`` (default ``release_vqvae_path``). Returns
    ``path``."""
    path = Path(path)
    tok = model if isinstance(model, Tokenizer) else model.tokenizer
    vqvae = var_release.vqvae_state(tok)  # refuses a tokenizer the format cannot hold
    if isinstance(model, Tokenizer):
        ours.atomic_write(path, lambda tmp: torch.save(vqvae, tmp))
        return path
    sd = {k: v.detach().clone().contiguous() for k, v in to_official_state_dict(model).items()}
    ours.atomic_write(path, lambda tmp: torch.save(sd, tmp))
    vq_path = Path(tokenizer_path) if tokenizer_path is not None else release_vqvae_path(path, tok)
    ours.atomic_write(vq_path, lambda tmp: torch.save(vqvae, tmp))
    return path


def export_official(model: Tokenizer | Generator, path: str | Path) -> Path:
    """Write ``model`` as an official checkpoint (tokenizer: msvq_train format; generator: VAR train.py format)."""
    path = Path(path)
    if isinstance(model, Tokenizer):
        sd = to_official_state_dict(model)
        payload = {"model": sd, "ema": sd, "steps": 0,
                   "args": argparse.Namespace(**_official_tokenizer_args(model.config))}
    else:
        cfg = model.config
        pn = tuple(cfg.patch_nums)
        args = OrderedDict(depth=cfg.depth, pn="_".join(map(str, pn)), patch_nums=pn, p_drop=cfg.p_drop,
                           anorm=cfg.attn_l2_norm, saln=cfg.shared_aln, test_model=True,
                           **_official_tokenizer_args(cfg.tokenizer))
        payload = {"epoch": 0, "iter": 0, "args": args,
                   "trainer": {"config": {"patch_nums": pn}, "var_wo_ddp": to_official_state_dict(model),
                               "vae_local": to_official_state_dict(model.tokenizer)}}
    ours.atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


FORMATS = ("auto", "imagefolder", "var")


def official_format(config: TokenizerConfig) -> str:
    """The official format ``convert`` writes a model in by default: VAR's release for tokenizers with VAR's 3x3
    quant_conv (only that format holds them), the ImageFolder authors' otherwise."""
    return "var" if config.quant_conv_ks != 1 else "imagefolder"


def convert(src: str | Path, out: str | Path, *, tokenizer: TokenizerSpec | None = None,
            format: str = "auto") -> tuple[str, Path]:
    """Official checkpoint -> our directory, or our directory -> an official file. Returns (kind, written path).

    Official files: the ImageFolder authors' tokenizer / VAR ``.pt``, or VAR's release (``vae_*.pth``, and
    ``var_d*.pth`` with ``tokenizer=`` its VQVAE). From ours, ``format`` picks the official layout: "imagefolder",
    "var" (VAR's release: a generator's VQVAE is written next to it, see ``release_vqvae_path``) or "auto"
    (``official_format``).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if tokenizer is None:
        tokenizer = hub.companion_tokenizer(src)
    src = Path(hub.resolve(src))
    if ours.is_our_checkpoint(src):
        kind = ours.read_config(src)["kind"]
        model = load_generator(src) if kind == "generator" else load_tokenizer(src)
        tok = model if kind == "tokenizer" else model.tokenizer
        fmt = official_format(tok.config) if format == "auto" else format
        if fmt == "var":
            return kind, export_var_release(model, out)
        if tok.config.quant_conv_ks != 1:
            raise CheckpointError(f"{src}: the ImageFolder format holds only 1x1 quant_conv layers (this tokenizer: "
                                  f"{tok.config.quant_conv_ks}x{tok.config.quant_conv_ks}); use format 'var'")
        return kind, export_official(model, out)
    ckpt = safe_torch_load(src)
    if var_release.is_vqvae_state(ckpt):
        config = _tokenizer_config(tokenizer) if tokenizer is not None else None
        return "tokenizer", save_tokenizer(_tokenizer_from_release(ckpt, str(src), config), out)
    if var_release.is_generator_state(ckpt):
        return "generator", save_generator(_generator_from_release(ckpt, str(src), tokenizer), out)
    if is_var_checkpoint(ckpt):
        return "generator", save_generator(_generator_from_official(ckpt, str(src), tokenizer), out)
    config = _tokenizer_config(tokenizer) if tokenizer is not None else None
    return "tokenizer", save_tokenizer(_tokenizer_from_official(ckpt, str(src), config), out)
