"""Training options: typed dataclasses filled from a YAML file and ``--key value`` command-line overrides.

A training YAML is flat, like the authors' ``configs/tokenizer.yaml``: a key is either a training option (a field of
the options dataclass) or a model field (a field of ``TokenizerConfig`` / ``GeneratorConfig``, applied on top of
``model_preset``). Dashes and underscores are interchangeable (``--global-batch-size`` = ``global_batch_size``).
A few official keys that describe what the official code could choose but we implement one way are accepted only
with that value (``ACCEPTED_ONLY``). Any other key is an error that names it and suggests the closest known key.

``load_options`` is the one place a run's configuration is resolved: derived defaults (the generator's lr from
tblr, its warm-up), what comes from other files (the tokenizer configuration a generator is trained on, a
classifier teacher's configuration, a fine-tuned checkpoint's architecture) and the training data's class count.
Options and model configurations come out frozen, before a trainer logs them; trainers read, never change them.
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from ..config import (VQ_MODEL_CH_MULT, ConfigError, GeneratorConfig, TokenizerConfig, generator_model_config,
                      set_fields, tokenizer_model_config)
from ..data.folder import find_classes, split_dir


def normalise_key(key: str) -> str:
    return key.strip().lstrip("-").replace("-", "_")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return {normalise_key(str(k)): v for k, v in data.items()}


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """``['--lr', '1e-4', '--ema', 'false', '--v-patch-nums', '[1,2,3]']`` -> values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise ConfigError(f"unexpected argument {tok!r}: overrides are written '--key value'")
        if "=" in tok:
            key, raw = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise ConfigError(f"{tok} needs a value")
            key, raw = tok[2:], tokens[i + 1]
            i += 2
        try:
            out[normalise_key(key)] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[normalise_key(key)] = raw
    return out


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Light type checking/coercion of one YAML value to a dataclass field's annotation."""
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{name}: a value is required")
    if hint is bool or text == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if hint is int or text in ("int", "int | None"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return int(value)
    if hint is float or text in ("float", "float | None"):
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if hint is str or text in ("str", "str | None"):
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return str(value)
    return value


def build_options(cls, model_cls, values: dict[str, Any], accepted_only: dict[str, tuple]) -> tuple[Any, Any]:
    """Split ``values`` into ``cls`` (training options) and ``model_cls`` fields; returns (options, model_config)."""
    train_fields = {f.name: f for f in dataclasses.fields(cls)}
    model_fields = {f.name for f in dataclasses.fields(model_cls)}
    hints = get_type_hints(cls)
    train_vals, model_vals, unknown = {}, {}, []
    for key, value in values.items():
        if key in train_fields:
            train_vals[key] = _coerce(key, value, hints[key])
        elif key in model_fields:
            model_vals[key] = value
        elif key in accepted_only:
            if value not in accepted_only[key]:
                raise ConfigError(f"{key}: only {accepted_only[key][0]!r} is supported, got {value!r}")
        else:
            unknown.append(key)
    if unknown:
        known = list(train_fields) + list(model_fields) + list(accepted_only)
        hints_txt = []
        for k in unknown:
            close = difflib.get_close_matches(k, known, n=1)
            hints_txt.append(f"{k}" + (f" (did you mean {close[0]}?)" if close else ""))
        raise ConfigError(f"unknown config key(s): {', '.join(hints_txt)}")
    options = cls(**train_vals)          # resolved and checked at construction
    model = options.model_config(model_vals)
    return options, model


@dataclasses.dataclass(frozen=True)
class CommonOptions:
    """Options shared by the training stages (official names where the official trainers have one). Frozen:
    derived values are filled in at construction (``resolve``), then checked (``check``)."""

    data_path: str = ""                  # training images, ImageFolder layout (DIR/CLASS/img.png), or DIR with train/
    val_data_path: str | None = None     # validation images (default: DATA/val when it exists)
    fresh_pictures: bool = False         # a make-dataset folder only: draw new training pictures every epoch (epoch
                                         # e = pictures e*N..(e+1)*N-1 of the set's training stream; epoch 0 = the
                                         # folder's own), so no picture is seen twice
    cloud_save_path: str = "runs/train"  # output folder (--out overrides it)
    model_preset: str = ""               # named model configuration the model keys are applied to
    epochs: int = 1
    max_steps: int | None = None         # stop after this many optimizer steps (None: epochs decide)
    time_budget_minutes: float | None = None  # stop after this much training time; the lr schedule then follows
                                         # the elapsed share of the budget (so it still decays to its end)
    global_batch_size: int = 32          # images per optimizer step over all processes and accumulation steps
    gradient_accumulation_steps: int = 1
    lr: float = 1e-4
    lr_scheduler: str = "cosine"         # none | constant | cosine | linear (each after warm-up)
    warmup_steps: int | None = None      # None: warmup_epochs
    warmup_epochs: float = 1.0
    final_lr_ratio: float = 0.0          # lr at the end of the cosine/linear decay, as a fraction of lr
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    max_grad_norm: float = 1.0           # gradient clipping (0 disables)
    ema: bool = True                     # keep an exponential moving average of the weights
    ema_decay: float = 0.9999
    mixed_precision: str = "none"        # none | bf16 | fp16 (fp16 uses a loss scaler; CUDA only)
    compile: bool = False                # torch.compile the model
    global_seed: int = 0
    num_workers: int = 2
    log_every: int = 50                  # steps between log lines / TensorBoard scalars
    ckpt_every: int = 1000               # steps between checkpoints (one is also written at the end)
    keep_checkpoints: int = 2            # newest training checkpoints kept on disk
    val_every: int = 1000                # steps between validations (and at the end); 0 disables
    val_max_images: int = 1000           # validation images used
    save_best: bool = True               # keep OUT/best by save_best_metric
    device: str = "auto"                 # auto | cpu | cuda
    max_nonfinite: int = 20              # consecutive non-finite steps tolerated before the run stops
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "imagefolder"

    def __post_init__(self) -> None:
        set_fields(self, **self.resolved())
        self.check()

    def resolved(self) -> dict[str, Any]:
        """Derived values of fields left at their "derive me" value (none here)."""
        return {}

    def check(self) -> None:
        self.check_common()

    def check_common(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.max_steps is None or self.max_steps >= 0, f"max_steps must be >= 0, got {self.max_steps}")
        need(self.global_batch_size >= 1, f"global_batch_size must be >= 1, got {self.global_batch_size}")
        need(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.lr_scheduler in ("none", "constant", "cosine", "linear"),
             f"lr_scheduler must be none, constant, cosine or linear, got {self.lr_scheduler!r}")
        need(self.mixed_precision in ("none", "bf16", "fp16"),
             f"mixed_precision must be none, bf16 or fp16, got {self.mixed_precision!r}")
        need(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        need(self.ckpt_every >= 1 and self.log_every >= 1, "ckpt_every and log_every must be >= 1")
        need(self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")
        need(self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {self.device!r}")
        need(self.max_nonfinite >= 1, "max_nonfinite must be >= 1")


# tokenizer training ----------------------------------------------------------------------------------------------
TOKENIZER_ACCEPTED_ONLY: dict[str, tuple] = {
    "vq_model": ("VQ-16", "VQ-8"),
    "entropy_loss_ratio": (0, 0.0), "detail_guide": ("none",), "lfq": (False,),
    "dataset": ("imagenet", "imagefolder"), "norm_type": ("bn",), "disc_reinit": (0,), "debug_disc": (False,),
    "guide_type_1": ("class",), "guide_type_2": ("class",), "no_local_save": (False,),
}


@dataclasses.dataclass(frozen=True)
class TokenizerTrainOptions(CommonOptions):
    """Tokenizer training (the authors' configs/tokenizer.yaml keys plus the XQ-GAN trainer's loss keys)."""

    model_preset: str = "imagefolder-4096"
    pretrained_backbone: str = "true"    # true (timm download of the DINOv2 weights) | false | PATH (local file)
    vq_ckpt: str | None = None           # initial weights: an official .pt or one of our checkpoints
    semantic_teacher: str | None = None  # classifier checkpoint (train-classifier) when semantic_guide: classifier
    finetune: bool = False               # accepted for compatibility: vq_ckpt always initialises weights only
    freeze_codes: bool = False           # train only what turns codes into pixels (post_quant_conv, decoder): the
                                         # encoder, quant_conv and quantizers stay as vq_ckpt has them, so every
                                         # code (and a generator trained on them) stays valid
    enc_tuning_method: str = "full"      # full | lora | frozen
    dec_tuning_method: str = "full"
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    reconstruction_loss: str = "l2"      # l1 | l2
    reconstruction_weight: float = 1.0
    perceptual_weight: float = 1.0       # weight of the perceptual loss; 0 disables it
    perceptual_net: str = "lpips"        # lpips (VGG16) | classifier:DIR (feature maps of a train-classifier output)
    perceptual_weights: str | None = None  # local torchvision VGG16 weights file for lpips (default: download)
    codebook_weight: float = 1.0
    disc_type: str = "patchgan"          # none | patchgan | stylegan | dinodisc
    disc_loss: str = "hinge"             # hinge | vanilla | non-saturating
    gen_loss: str = "hinge"              # hinge | vanilla | non-saturating
    disc_weight: float = 0.5
    disc_epoch_start: int = 0            # epoch at which the discriminator starts
    disc_start: int | None = None        # the same in steps (overrides disc_epoch_start)
    disc_lr: float | None = None         # None: lr
    disc_weight_decay: float = 0.0
    disc_adaptive_weight: bool = False   # VQGAN's gradient-norm balancing of the adversarial term
    lecam_loss_weight: float | None = None
    disc_dim: int = 64                   # discriminator width (patchgan / stylegan)
    disc_num_layers: int = 3
    disc_pretrained: str = "true"        # dinodisc backbone weights: true | false | PATH
    disc_model: str = "vit_small_patch14_dinov2.lvd142m"   # dinodisc backbone
    disc_augment: str = "color,translation,cutout"         # DiffAugment policy for discriminator inputs ("" = none)
    aug_prob: float = 1.0                # probability of augmenting a discriminator batch
    aug_fade_steps: int = 0              # blur of discriminator inputs fades out over this many steps after start
    rfid_features: str = "auto"          # auto | inception | domain:CLASSIFIER_DIR | none (auto: Inception when
                                         # its weights load, else the classifier teacher, else no rFID)
    inception_weights: str | None = None  # local Inception file for rFID (default: torch-fidelity's download)
    save_best_metric: str = "psnr"       # psnr | ssim | rfid | usage (what "best" means)

    def model_config(self, model_vals: dict[str, Any]) -> TokenizerConfig:
        """``model_preset`` + the model keys, with the classifier teacher's configuration (from
        ``semantic_teacher``, or from ``vq_ckpt`` when fine-tuning) when ``semantic_guide`` is classifier."""
        cfg = tokenizer_model_config(self.model_preset, model_vals)
        for part, method in (("enc", self.enc_tuning_method), ("dec", self.dec_tuning_method)):
            if method == "lora" and getattr(cfg, f"{part}_type") == "cnn":
                raise ConfigError(f"{part}_tuning_method: lora adapts the MLPs of a ViT; the conv {part}oder "
                                  "(cnn) trains full or frozen")
        if cfg.semantic_guide != "classifier":
            return cfg
        teacher = cfg.teacher
        if self.semantic_teacher:
            from ..models.classifier import read_classifier_config
            teacher = read_classifier_config(self.semantic_teacher).to_dict()
            if cfg.teacher and cfg.teacher != teacher:
                raise ConfigError(f"semantic_teacher {self.semantic_teacher} does not match the config's teacher")
        elif self.vq_ckpt and not teacher:  # fine-tuning: the teacher comes with the weights
            from ..loading import _tokenizer_config
            teacher = _tokenizer_config(self.vq_ckpt).teacher
        if not teacher:
            raise ConfigError("semantic_guide: classifier needs semantic_teacher: DIR (a train-classifier output)")
        return dataclasses.replace(cfg, teacher=teacher)

    def check(self) -> None:
        self.check_common()
        for name in ("enc_tuning_method", "dec_tuning_method"):
            if getattr(self, name) not in ("full", "lora", "frozen"):
                raise ConfigError(f"{name} must be full, lora or frozen, got {getattr(self, name)!r}")
        checks = [("reconstruction_loss", ("l1", "l2")), ("disc_type", ("none", "patchgan", "stylegan", "dinodisc")),
                  ("disc_loss", ("hinge", "vanilla", "non-saturating")),
                  ("gen_loss", ("hinge", "vanilla", "non-saturating")),
                  ("save_best_metric", ("psnr", "ssim", "rfid", "usage"))]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.freeze_codes and not self.vq_ckpt:
            raise ConfigError("freeze_codes keeps the codes of a trained tokenizer: give it as vq_ckpt")
        from ..losses.domain_perceptual import parse_perceptual_net
        try:
            parse_perceptual_net(self.perceptual_net)
        except ValueError as e:
            raise ConfigError(str(e)) from None


# generator training ----------------------------------------------------------------------------------------------
GENERATOR_ACCEPTED_ONLY: dict[str, tuple] = {
    "opt": ("adamw", "adam"), "sche": ("lin0",), "pg": (0, 0.0), "twde": (0, 0.0), "saln": (False, 0),
}


@dataclasses.dataclass(frozen=True)
class GeneratorTrainOptions(CommonOptions):
    """Generator (VAR) training; the VAR recipe's names in brackets: lr = tblr * global_batch_size / 256.

    The model keys (depth, embed_dim, num_heads, num_classes, cond_drop_rate, p_drop, ...) apply on top of
    ``model_preset``; the tokenizer configuration always comes from the ``tokenizer`` checkpoint, and
    ``num_classes`` defaults to the number of classes of the training data.
    """

    model_preset: str = "d16"
    tokenizer: str | None = None         # tokenizer checkpoint (--tokenizer on the command line)
    var_ckpt: str | None = None          # initial generator weights (fine-tuning): VAR's release (var_d16.pth, with
                                         # tokenizer = its VQVAE), an official ImageFolder VAR .pt or one of our
                                         # generator directories (tokenizer unset: its own); the architecture is its
    codes_cache: str | None = None       # codes written by `imagefolder pretokenize` (default: tokenize on the fly)
    tblr: float = 1e-4                   # base lr per 256 images [tblr]; lr (if given) wins
    lr: float = 0.0                      # 0: tblr * global_batch_size / 256
    weight_decay: float = 0.05           # [twd], not applied to norms, biases, embeddings and position tables
    max_grad_norm: float = 2.0           # [tclip]
    label_smoothing: float = 0.0         # [ls]
    lr_scheduler: str = "linear"         # [sche lin0]: warm-up then linear decay to final_lr_ratio
    warmup_epochs: float = 0.0           # [wp]; 0: epochs / 50
    final_lr_ratio: float = 0.01         # [wpe]
    hflip: bool = True                   # random horizontal flips (or both flips from the codes cache)
    ema_decay: float = 0.999
    init_adaln_gamma: float = 1e-5       # [alng] initial scale of the AdaLN gamma weights (the recipes use 1e-4)
    val_samples: int = 8                 # images in the validation sample grid (classes spread evenly); 0: none
    sample_cfg: float = 3.25             # guidance, top-k and top-p of those samples
    sample_top_k: int = 750
    sample_top_p: float = 0.95

    def model_config(self, model_vals: dict[str, Any]) -> GeneratorConfig:
        return generator_config(self, model_vals)

    def resolved(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.lr == 0:
            out["lr"] = self.tblr * self.global_batch_size / 256
        if self.warmup_epochs == 0 and self.warmup_steps is None:
            out["warmup_epochs"] = self.epochs / 50
        return out

    def check(self) -> None:
        self.check_common()
        if self.codes_cache and self.fresh_pictures:
            raise ConfigError("fresh_pictures draws new pictures every epoch, a codes cache holds fixed ones: drop "
                              "codes_cache (the pictures are then tokenized on the fly)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.val_samples < 0 or self.sample_top_k < 0 or not 0.0 <= self.sample_top_p <= 1.0:
            raise ConfigError("val_samples and sample_top_k must be >= 0 and sample_top_p in [0, 1]")


# classifier training -------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClassifierTrainOptions(CommonOptions):
    """The domain classifier (``train_classifier``): AdamW with weight decay on every parameter, no clipping, no
    EMA, a short linear warm-up, then cosine decay to 0; the final model only (``save_best`` off)."""

    model_preset: str = "tiny"           # CLASSIFIER_PRESETS
    epochs: int = 6
    lr: float = 2e-3
    weight_decay: float = 0.05
    beta2: float = 0.999
    max_grad_norm: float = 0.0
    ema: bool = False
    num_workers: int = 0
    keep_checkpoints: int = 1
    save_best: bool = False
    tensorboard: bool = False


def load_options(cls, accepted_only: dict[str, tuple], config_path: str | Path | None, overrides: dict[str, Any]):
    """YAML file (optional) + overrides -> (options, model config).

    As in the authors' trainer, ``vq_model`` (VQ-16 / VQ-8) chooses the conv network's levels: it sets
    ``encoder_ch_mult`` / ``decoder_ch_mult`` when the values ask for a cnn encoder / decoder and do not list them.
    """
    values = read_yaml(config_path) if config_path else {}
    values.update(overrides)
    levels = VQ_MODEL_CH_MULT.get(values.get("vq_model"))
    for part in ("enc", "dec"):
        if levels and values.get(f"{part}_type") == "cnn":
            values.setdefault(f"{part}oder_ch_mult", levels)
    model_cls = TokenizerConfig if cls is TokenizerTrainOptions else GeneratorConfig
    return build_options(cls, model_cls, values, accepted_only)


# the generator's model configuration --------------------------------------------------------------------------
# the architecture a var_ckpt fixes (the other model keys, e.g. cond_drop_rate or drop_path_rate, may change)
_FIXED_BY_CKPT = ("depth", "embed_dim", "num_heads", "mlp_ratio", "num_classes", "attn_l2_norm", "shared_aln")


def training_classes(opts) -> list[str]:
    """Class names of the training data: the codes cache's, else the image folder's."""
    if opts.codes_cache:
        from .pretokenize import read_cache_meta
        return list(read_cache_meta(opts.codes_cache)["classes"])
    if opts.data_path:
        return find_classes(split_dir(opts.data_path, "train"))
    raise ConfigError("no training data: set data_path (images) or codes_cache (imagefolder pretokenize output)")


def generator_config(opts: GeneratorTrainOptions, model_vals: dict[str, Any]) -> GeneratorConfig:
    """``model_preset`` + the YAML's model keys, with the tokenizer configuration of ``opts.tokenizer`` and, unless
    the keys give it, ``num_classes`` = the number of classes of the training data. With ``var_ckpt`` the
    checkpoint's configuration + the YAML's model keys that do not change its architecture. Reads configurations
    only (our folders' config.json; an official file's configuration is inside it)."""
    from ..loading import _generator_config, _tokenizer_config
    if opts.var_ckpt:
        base = _generator_config(opts.var_ckpt, tokenizer=opts.tokenizer)
        clash = [k for k in _FIXED_BY_CKPT if k in model_vals and model_vals[k] != getattr(base, k)]
        if clash:
            raise ConfigError(f"var_ckpt {opts.var_ckpt} fixes " + ", ".join(f"{k}={getattr(base, k)}" for k in clash)
                              + f" (the config asks for {', '.join(f'{k}={model_vals[k]}' for k in clash)}); drop "
                              "these keys")
        return GeneratorConfig(**{**base.to_dict(), **model_vals, "tokenizer": base.tokenizer})
    if not opts.tokenizer:
        raise ConfigError("no tokenizer: pass --tokenizer CKPT (e.g. a train-tokenizer run's OUT/best, or an "
                          "official tokenizer .pt)")
    values = {**model_vals, "tokenizer": _tokenizer_config(opts.tokenizer)}
    if "num_classes" not in values:
        values["num_classes"] = len(training_classes(opts))
    return generator_model_config(opts.model_preset, values)
