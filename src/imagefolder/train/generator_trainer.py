"""Generator (VAR) training: teacher forcing, cross-entropy over every scale and branch.

One step: each micro-batch's codes (tokenized on the fly in float32 by the frozen tokenizer, or read from a
``pretokenize`` cache), the teacher-forcing input the tokenizer builds from them, the generator's logits
(B, L, P*V) viewed as (B, L, P, V) against the codes (B, L, P), cross-entropy with label smoothing averaged over
batch, tokens and branches (the official loss). Label dropout (cond_drop_rate, for guidance) and token masking
(p_drop) happen inside the model in training mode. One AdamW step with the VAR recipe (lr = tblr * batch / 256,
warm-up then linear decay, no weight decay on norms, biases, embeddings and position tables), then the EMA of the
generator's own weights (the frozen tokenizer is not part of the generator, so it is neither trained, averaged
nor saved in the training checkpoints; the official trainer keeps no EMA).

Validation (EMA weights): cross-entropy without smoothing and top-1 accuracy over the validation images, overall
and per scale (averaged over branches); "best" is the lowest validation loss. A grid of samples for a few classes
goes to TensorBoard.

Glossary: ``B`` micro-batch, ``L`` tokens per branch over all scales, ``P`` branches, ``V`` codebook size,
``K`` scales.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import Dataset

from ..data.folder import Batch, ImageFolderDataset, split_dir
from ..data.fresh import FreshPictures
from ..distributed import all_reduce_
from ..loading import load_generator, load_tokenizer, save_generator
from ..models.generator import Generator, scale_levels
from .control import TrainingError
from .engine import Schedule, Trainer
from .optim import EMA, adamw, param_groups
from .pretokenize import CodesDataset, check_cache_tokenizer, codes_BPL, split_codes, tokenizer_fingerprint
from .validation import validation_batches, validation_set

class GeneratorTrainer(Trainer):
    kind = "generator"
    best_metric = ("loss", False)

    def __init__(self, opts, model_config, out_dir, info, **kw):
        # the models are read once, here, before the base class creates OUT: a wrong path fails first
        self._init_gen = load_generator(opts.var_ckpt, tokenizer=opts.tokenizer) if opts.var_ckpt else None
        tok = self._init_gen.tokenizer if self._init_gen is not None else load_tokenizer(opts.tokenizer)
        if tok.config != model_config.tokenizer:
            raise TrainingError(f"the tokenizer {opts.tokenizer} does not have the configuration the generator "
                                "configuration names; resolve the configuration with options.generator_config()")
        super().__init__(opts, model_config, out_dir, info, **kw)
        self.tok = tok.to(self.device).requires_grad_(False).eval()

    @cached_property
    def tok_fingerprint(self) -> str:
        return tokenizer_fingerprint(self.tok)

    # data ------------------------------------------------------------------------------------------------------------
    def train_dataset(self) -> Dataset:
        o, c = self.opts, self.model_config
        if o.fresh_pictures:
            data = FreshPictures(split_dir(o.data_path, "train"), c.tokenizer.image_size, flip=o.hflip,
                                 seed=o.global_seed)
        elif o.codes_cache:
            data = CodesDataset(o.codes_cache, flip=o.hflip, seed=o.global_seed)
            check_cache_tokenizer(o.codes_cache, data.meta, self.tok, self.tok_fingerprint)
        elif o.data_path:
            data = ImageFolderDataset(split_dir(o.data_path, "train"), c.tokenizer.image_size, flip=o.hflip,
                                      seed=o.global_seed)
        else:
            raise TrainingError("no training data: set data_path (images) or codes_cache (imagefolder pretokenize)")
        self.classes = data.classes
        if len(self.classes) > c.num_classes:
            raise TrainingError(f"the training data has {len(self.classes)} classes but the generator num_classes "
                                f"is {c.num_classes}; raise num_classes or leave it unset (default: the data's)")
        return data

    def _val_dataset(self) -> ImageFolderDataset | None:
        """The validation set, scanned once (at the start when validation is on) and kept; None when none."""
        if not hasattr(self, "_val"):
            self._val = validation_set(self.opts, self.model_config.tokenizer.image_size, self.classes)
        return self._val

    def check_validation_data(self) -> None:
        self._val_dataset()  # a missing folder or foreign class folders stop the run before step 1

    # model -----------------------------------------------------------------------------------------------------
    def build(self, schedule: Schedule) -> None:
        o, dev = self.opts, self.device
        gen = Generator(self.model_config, self.tok)
        gen.init_weights(init_adaln_gamma=o.init_adaln_gamma)
        if self._init_gen is not None:  # fine-tuning: every weight of the checkpoint (empty_emb stays new if p_drop)
            result = gen.load_state_dict(self._init_gen.state_dict(), strict=False)
            assert not result.unexpected_keys, result.unexpected_keys
            missing = list(result.missing_keys)
            if missing and missing != ["empty_emb.weight"]:
                raise TrainingError(f"var_ckpt {o.var_ckpt} lacks {missing[:4]}")
            self._init_gen = None
        self.gen = gen.to(dev)
        self.ema = None
        self.eval_gen = self.gen
        if o.ema:
            self.ema = EMA(self.gen, o.ema_decay)
            self.eval_gen = self.gen.sharing_tokenizer().eval()
        self.module = torch.compile(self.gen) if o.compile else self.gen
        if self.info.world_size > 1:
            self.module = DDP(self.module, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.params = [p for p in self.gen.parameters() if p.requires_grad]
        self.opt = adamw(param_groups(self.gen, o.weight_decay), o.lr, (o.beta1, o.beta2), dev)

    # one step ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _codes(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes (B, P, L) int64, teacher-forcing input) of a batch: its cached codes, or its pictures encoded."""
        if batch.codes is not None:
            return self._teacher_forcing(batch.codes.to(self.device, non_blocking=True).long())
        return self._encode(batch.images)

    @torch.no_grad()
    def _encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``_codes`` of pictures (B, 3, H, W) in [-1, 1], tokenized by the frozen tokenizer."""
        return self._teacher_forcing(codes_BPL(self.tok.encode(images.to(self.device, non_blocking=True))))

    def _teacher_forcing(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return codes, self.tok.var_input(split_codes(codes, self.model_config.patch_nums))

    def _logits_BLPV(self, model, labels_B: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
        logits = model(labels_B, x_in)
        B, L, _ = logits.shape
        return logits.view(B, L, self.gen.P, self.gen.V)

    def train_step(self, micro: list[Batch]) -> dict[str, float]:
        o, V = self.opts, self.gen.V
        self.module.train()
        sums = {"loss": 0.0, "acc": 0.0}
        for i, batch in enumerate(micro):
            codes_BPL_, x_in = self._codes(batch)
            target_BLP = codes_BPL_.transpose(1, 2)
            labels = batch.labels.to(self.device, non_blocking=True)
            with self.no_sync(self.module, i == len(micro) - 1), self.autocast():
                logits = self._logits_BLPV(self.module, labels, x_in)
                loss = F.cross_entropy(logits.reshape(-1, V), target_BLP.reshape(-1),
                                       label_smoothing=o.label_smoothing)
                self.backward(loss / len(micro), "generator")
            sums["loss"] += float(loss.detach()) / len(micro)
            sums["acc"] += float((logits.detach().argmax(-1) == target_BLP).float().mean()) / len(micro)
        lr = self.lr_now(o.lr)
        stepped, gnorm = self.optimizer_step("generator", self.opt, self.params, lr)
        self.note_nonfinite(stepped, "generator loss or gradients")
        if stepped and self.ema is not None:
            self.ema.update(self.gen)
        return {**sums, "lr": lr, "grad_norm": gnorm}

    # validation ------------------------------------------------------------------------------------------------
    def _eval_model(self) -> Generator:
        if self.ema is not None:
            self.ema.copy_to(self.eval_gen)
        return self.eval_gen.eval()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        gen = self._eval_model()
        if self.info.is_main and self.opts.val_samples:
            self._log_samples(gen)
        val = self._val_dataset()
        if val is None:
            return {}
        dev, pn = self.device, self.model_config.patch_nums
        level_L = scale_levels(pn, dev)[0]
        K, P = len(pn), self.gen.P
        stats = torch.zeros(2 + K, device=dev)  # loss sum, images, correct codes per scale
        for x, labels in validation_batches(self, val):
            codes_BPL_, x_in = self._encode(x)
            target_BLP = codes_BPL_.transpose(1, 2)
            with self.autocast():
                logits = self._logits_BLPV(gen, labels.to(dev), x_in).float()
            stats[0] += F.cross_entropy(logits.reshape(-1, gen.V), target_BLP.reshape(-1), reduction="sum")
            stats[1] += len(labels)
            correct_L = (logits.argmax(-1) == target_BLP).float().sum(dim=(0, 2))
            stats[2:] += torch.zeros(K, device=dev).index_add_(0, level_L, correct_L)
        all_reduce_(stats)
        images = float(stats[1])
        if images == 0:
            return {}
        per_scale = torch.tensor([pn_ * pn_ for pn_ in pn], device=dev) * P * images
        metrics = {"loss": float(stats[0]) / (images * gen.L * P), "acc": float(stats[2:].sum()) / (images * gen.L * P)}
        metrics.update({f"acc_s{si}": float(stats[2 + si] / per_scale[si]) for si in range(K)})
        return metrics

    def _log_samples(self, gen: Generator) -> None:
        """A row of samples for ``val_samples`` classes spread over the label range (seed 0: the same noise each
        time, so the grids show the model change)."""
        from torchvision.utils import make_grid

        from ..viz import to_pil
        o = self.opts
        labels = torch.linspace(0, gen.num_classes - 1, o.val_samples).round().long()
        imgs = gen.generate(labels, cfg=o.sample_cfg, top_k=o.sample_top_k, top_p=o.sample_top_p, seed=0)
        self.log.image("val/samples", to_pil(make_grid(imgs.float().cpu(), nrow=min(8, o.val_samples), padding=2,
                                                       pad_value=1.0)), self.step)

    # saving ----------------------------------------------------------------------------------------------------
    def export(self, out_dir: Path) -> None:
        """The (EMA) generator with its tokenizer, in the format ``load_generator`` / ``imagefolder sample`` read,
        and the training classes' names in class id order (``class_names`` in config.json; ``imagefolder serve``
        shows them)."""
        save_generator(self._eval_model(), out_dir, extra={"class_names": [str(c) for c in self.classes]})

    def model_states(self) -> dict[str, Any]:
        s = {"generator": self.gen.state_dict(), "opt": self.opt.state_dict(),
             "tokenizer_fingerprint": self.tok_fingerprint}
        if self.ema is not None:
            s["ema"] = self.ema.state_dict()
        return s

    def load_model_states(self, states: dict[str, Any]) -> None:
        if states.get("tokenizer_fingerprint") != self.tok_fingerprint:
            raise TrainingError(f"the checkpoint was trained with a different tokenizer than {self.opts.tokenizer}; "
                                "resume with the tokenizer the run started with")
        missing, unexpected = self.gen.load_state_dict(states["generator"], strict=False)
        wrong = list(missing) + list(unexpected)
        if wrong:
            raise TrainingError(f"the checkpoint's generator does not match the configuration: {wrong[:5]}")
        self.opt.load_state_dict(states["opt"])
        if self.ema is not None:
            if "ema" not in states:
                raise TrainingError("the checkpoint has no EMA weights but ema is on; set ema: false to resume it")
            self.ema.load_state_dict(states["ema"])
