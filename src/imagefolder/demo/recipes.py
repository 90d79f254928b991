"""The demo's recipes: model sizes and training hyper-parameters, as plain option overrides (the one place to tune).

They live in the package (not in configs/) so ``imagefolder demo`` works from an installed package. Tokenizer and
generator entries are keys of ``TokenizerTrainOptions`` / ``GeneratorTrainOptions`` and their model configs (the
YAML keys of ``configs/tiny-tokenizer.yaml`` / ``configs/tiny-generator.yaml``); the classifier entries are
arguments of ``train.classifier_trainer.train_classifier``. The demo fills in the paths, the seed, the device
and the stopping rule (a time budget, or fixed step counts); ``epochs`` is the most a budgeted run may use.
"""
from __future__ import annotations

from typing import Any

# the data: built-in sets, written by imagefolder.data.make_dataset (32 px: the tokenizer's image size)
DATASET: dict[str, Any] = {"size": 32, "train_per_class": 500, "val_per_class": 50}
QUICK_DATASET: dict[str, Any] = {"size": 32, "train_per_class": 100, "val_per_class": 20}
PROBE_TRAIN_PER_CLASS = 50    # training pictures per class the default mode writes for the linear probe

# the judge scores samples and reconstructions and takes no part in training: 20 epochs, so that it recognises
# all real validation pictures (6 epochs: 0.954, a ceiling below the reconstruction target). The teacher is a
# second classifier trained with seed + TEACHER_SEED_OFFSET: its 128-d features are the tokenizer's frozen
# semantic teacher and its feature maps the tokenizer's perceptual loss. It keeps 6 epochs: with
# a 20-epoch teacher the perceptual term was twice as large and the tokenizer 1 dB worse after 8000 steps, its
# reconstructions recognised 0.62 of the time (docs/DESIGN.md).
CLASSIFIER: dict[str, Any] = {"preset": "tiny", "epochs": 20, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.05}
TEACHER: dict[str, Any] = {**CLASSIFIER, "epochs": 6}
TEACHER_SEED_OFFSET = 1

# The conv tokenizer (the authors' enc_type/dec_type cnn at widths 32/64, 4x down to an 8x8 grid), the paper's
# method at CPU scale (the ablation's row 6; the demo adds PATTERN_SCALES below): on these small
# pictures it learns far faster than the ViT from scratch the demo used before (docs/DESIGN.md: 0.97 of its
# reconstructions recognised after 2500 steps, the ViT 0.80 after 10000), and its finest codes flip less under
# invisible noise (19% / 29% against 27% / 52%).
TOKENIZER: dict[str, Any] = {
    "model_preset": "cnn-small", "pretrained_backbone": False,
    "codebook_size": 256, "codebook_embed_dim": 8, "v_patch_nums": [1, 2, 3, 4, 6, 8],  # the last scale: the grid
    "product_quant": 2,                                   # two branches of folded tokens (channel groups)
    "codebook_drop": 0.1, "start_drop": 2,                # quantizer dropout: 10% of a batch keeps a scale prefix
    "semantic_guide": "classifier", "half_sem": True,     # the last branch is pulled toward the teacher's features
    "sem_loss_weight": 0.1,
    "global_batch_size": 16, "epochs": 30, "lr": 1e-3, "lr_scheduler": "cosine", "warmup_steps": 100,
    "weight_decay": 0.0, "ema": True, "ema_decay": 0.999,
    # L2 plus a perceptual loss in the teacher's feature maps (perceptual_net classifier:TEACHER, filled in by the
    # demo): with the ViT it doubled the share of recognised reconstructions after 1000 steps
    "reconstruction_loss": "l2", "perceptual_weight": 0.05, "disc_type": "none",
    "num_workers": 0, "log_every": 10, "val_every": 500, "ckpt_every": 1000, "val_max_images": 200,
    "save_best_metric": "psnr", "tensorboard": False,
}

# Pattern scales (docs/DESIGN.md "Pattern scales"), a demo addition the paper does not have, so the ablation rows
# leave them out (their row 6 is TOKENIZER): the first three scales pick whole latent patches from their own
# codebooks, so the generator decides a picture's global layout in three draws. With the shipped model's data,
# teacher, judge and generator recipe a prototype's samples were recognised 0.69 of the time (TOKENIZER alone:
# 0.57); the first model the package shipped with it: 0.624 (reconstructions 0.954). A repeated 1x1 scale gives two
# global draws; quantizer dropout 0.2 from the first scale trains decoding from a pattern prefix alone.
PATTERN_SCALES: dict[str, Any] = {"v_patch_nums": [1, 1, 2, 3, 4, 6, 8], "pattern_scales": 3,
                                  "codebook_drop": 0.2, "start_drop": 1}


# Latent perturbation (docs/DESIGN.md "Latent perturbation"), also a demo addition (RobusTok's, not the paper's): in
# training a fifth of the code positions take one of their 7 next-nearest codes and the later scales correct the
# miss. With the shipped model's data, teacher, judge and step counts the tokenizer reached 23.2 dB instead of 21.0
# and 0.970 of its reconstructions were recognised instead of 0.954; the samples stayed where they were (0.612
# against 0.628, within the noise).
LATENT_PERTURB: dict[str, Any] = {"latent_perturb": 0.2, "latent_perturb_topk": 8}


def demo_tokenizer() -> dict[str, Any]:
    """The demo's tokenizer recipe: ``TOKENIZER`` with ``PATTERN_SCALES`` and ``LATENT_PERTURB`` (read now, so a
    test's recipes carry over)."""
    return {**TOKENIZER, **PATTERN_SCALES, **LATENT_PERTURB}


# The generator: depth 6, width 256 (7.4 M parameters), compiled (torch.compile) and under bf16 autocast: on a CPU
# with AMX its step runs 2.1x its eager fp32 step (62.1 against 29.3 images/s, benchmarks/bench_generator_step.py;
# 61 in the demo's trainer; 30-60 s of compiling first), so the shipped run's 3000 steps give it 2.6x the compute of the
# depth-4, width-192 generator shipped before within the hour. With the shipped tokenizer recipe its samples were
# recognised 0.690 of the time in the run, the depth-4 generator's 0.612 (docs/DESIGN.md "A larger generator").
GENERATOR: dict[str, Any] = {
    "model_preset": "tiny", "depth": 6, "embed_dim": 256, "num_heads": 4, "drop_path_rate": 0.0,
    "compile": True, "mixed_precision": "bf16",
    "cond_drop_rate": 0.1,
    "global_batch_size": 32, "epochs": 40, "lr": 1e-3, "lr_scheduler": "linear", "warmup_epochs": 1.0,
    "final_lr_ratio": 0.01, "weight_decay": 0.05, "max_grad_norm": 2.0, "label_smoothing": 0.1, "hflip": True,
    "ema": True, "ema_decay": 0.999,
    "num_workers": 0, "log_every": 5, "val_every": 1000, "ckpt_every": 1000, "val_max_images": 200,
    "val_samples": 0, "tensorboard": False,
}

# The small generator: depth 4, width 192, eager fp32 (the demo's until 2026-12-01). A time-budgeted demo whose
# generator stage gets less than LARGE_GENERATOR_MIN_MINUTES trains it instead of GENERATOR: in the 15-minute
# `demo --train` (about 5.5 minutes of generator) it drew better samples (0.290 in 736 steps) than the large one
# (0.226 in 384 steps, compiling included), and at equal time the large one's validation loss catches up only after
# about 12 minutes (docs/DESIGN.md). The ablation uses it for every row, so that its measured table (BENCHMARKS.md)
# stays what `imagefolder ablate` reproduces and six rows stay cheap.
SMALL_GENERATOR: dict[str, Any] = {**GENERATOR, "depth": 4, "embed_dim": 192, "num_heads": 4, "compile": False,
                                   "mixed_precision": "none"}
LARGE_GENERATOR_MIN_MINUTES = 15.0
# A budgeted stage with at least COMPILE_MIN_MINUTES trains the small generator compiled under bf16 (1.57x its eager
# fp32 step in benchmarks/bench_generator_step.py; in the 15-minute run 1217 steps and samples 0.426 against 736 and
# 0.290); compiling costs 30-60 s before the first step, so shorter stages (--quick's) run eagerly.
COMPILE_MIN_MINUTES = 3.0

# 50 samples per class: 500 put the standard error of the sample accuracy near 0.02 (200: 0.035).
# constant guidance: with the official ramp (no guidance at the first scales, where the shape is decided) the
# previous shipped model's samples were recognised 0.42 of the time at cfg 3, with constant guidance 0.58 (6-epoch
# judge, docs/DESIGN.md)
SAMPLING: dict[str, Any] = {"per_class": 50, "cfg": 3.0, "cfg_schedule": "constant", "top_k": 0, "top_p": 0.95,
                            "seed": 0}
# validation pictures whose first k scales the generator completes, for every k (report: where recognisability is
# lost along the scales). 100 (600 completions, about 20 s for the shipped depth-6 generator on a 2-core CPU) keep
# `imagefolder demo` under a minute; 200 took it to 69 s (standard error of each share: about 0.05 with 100)
PREFIX_IMAGES = 100
RECONSTRUCTION_ROWS = 10      # validation images in reconstructions.png (spread over the classes)
PROBE_MAX_TRAIN = 500         # training images the linear probe is fitted on (spread over the set)

# the time budget of --train: shares of the minutes given to each trainer; the rest (making the data,
# pretokenizing, sampling and evaluating) is what is left. A stage that ends early leaves its time to the next.
BUDGET_MINUTES = 15.0
QUICK_BUDGET_MINUTES = 2.0
BUDGET_SHARES: dict[str, float] = {"classifier": 0.05, "teacher": 0.05, "tokenizer": 0.45, "generator": 0.38}

# the fixed step counts that produce the shipped model, keyed by demo option (README: the exact command)
SHIP_STEPS: dict[str, int] = {"classifier_epochs": 20, "teacher_epochs": 6, "tokenizer_steps": 2500,
                              "generator_steps": 3000}

# what the shipped model should reach (reported, not asserted)
TARGETS: dict[str, float] = {"sample_class_accuracy": 0.9, "reconstruction_class_accuracy": 0.95,
                             "codebook_usage_finest": 0.8}


def ship_command() -> str:
    """The command that trains the shipped demo model and copies it into the package."""
    counts = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in SHIP_STEPS.items())
    return f"imagefolder demo --train {counts} --ship"
