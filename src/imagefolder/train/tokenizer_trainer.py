"""Tokenizer training: reconstruction (L1/L2) + LPIPS + codebook/commitment + semantic + adversarial losses.

One step: the tokenizer's micro-batches forward/backward (quantizer dropout, semantic contrastive loss over the
global batch), one AdamW step, the EMA update; then, once the discriminator has started, the discriminator's
micro-batches on the detached reconstructions (DiffAugment, optional fading blur, LeCam) and its AdamW step.

Validation (EMA weights when ``ema``): PSNR and SSIM (``metrics.ReconstructionQuality``), codebook usage per branch
and scale (``metrics.codebook.CodeCounts``), optional rFID, and a per-scale reconstruction grid for TensorBoard.
Training logs the authors' running usage statistic as ``recent_usage_finest`` (``metrics.codebook.recent_usage``).

Glossary: ``B`` micro-batch, ``P`` branches, ``K`` scales, ``V`` codebook size.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torchvision.transforms.functional import gaussian_blur

from ..checkpoint import save_model
from ..data.folder import ImageFolderDataset, split_dir
from ..data.fresh import FreshPictures
from ..distributed import all_gather_object, all_reduce_, broadcast_buffers_, gather_with_grad
from ..losses import LeCam, adaptive_weight, build_discriminator, build_perceptual, d_loss, diff_augment, g_loss
from ..metrics.codebook import CodeCounts, recent_usage
from ..metrics.image_quality import ReconstructionQuality, to_uint8
from ..models.tokenizer import Tokenizer
from .control import TrainingError
from .engine import Schedule, Trainer
from .validation import validation_batches, validation_set
from .optim import EMA, adamw, param_groups
from .tuning import apply_tuning, merged_state_dict

_HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "usage": True, "rfid": False}


def parse_pretrained(value: str) -> bool | str:
    """'true' / 'false' / a path (the YAML/CLI form of a pretrained-weights option)."""
    low = str(value).strip().lower()
    if low in ("true", "yes", "1"):
        return True
    if low in ("false", "no", "0", "none", ""):
        return False
    return str(value)


class TokenizerTrainer(Trainer):
    kind = "tokenizer"

    def __init__(self, opts, model_config, out_dir, info, **kw):
        super().__init__(opts, model_config, out_dir, info, **kw)
        self.best_metric = (opts.save_best_metric, _HIGHER_IS_BETTER[opts.save_best_metric])
        self._rfid = None  # the rFID feature extractor, made at the first validation

    # data ------------------------------------------------------------------------------------------------------------
    def train_dataset(self):
        if not self.opts.data_path:
            raise TrainingError("no training data: set data_path in the config or pass --data-path DIR")
        root, size, seed = split_dir(self.opts.data_path, "train"), self.model_config.image_size, self.opts.global_seed
        self.train_set = (FreshPictures(root, size, flip=True, seed=seed) if self.opts.fresh_pictures
                          else ImageFolderDataset(root, size, flip=True, seed=seed))
        return self.train_set

    def _val_dataset(self) -> ImageFolderDataset | None:
        """The validation set, scanned at the first validation and kept (None when there is none)."""
        if not hasattr(self, "_val"):
            self._val = validation_set(self.opts, self.model_config.image_size, self.train_set.classes)
        return self._val

    def check_validation_data(self) -> None:
        self._val_dataset()  # scanned now: a missing folder or foreign class folders stop the run before step 1

    # model -----------------------------------------------------------------------------------------------------------
    def _teacher(self):
        """The classifier teacher named by semantic_teacher (its configuration is already the config's teacher)."""
        from ..models.classifier import load_classifier
        teacher, _ = load_classifier(self.opts.semantic_teacher)
        if self.model_config.teacher != teacher.config.to_dict():
            raise TrainingError(f"semantic_teacher {self.opts.semantic_teacher} does not match the config's teacher")
        return teacher

    def build(self, schedule: Schedule) -> None:
        o, dev = self.opts, self.device
        teacher = self._teacher() if self.model_config.semantic_guide == "classifier" and o.semantic_teacher else None
        tok = Tokenizer(self.model_config, pretrained_backbone=parse_pretrained(o.pretrained_backbone))
        if teacher is not None:
            tok.semantic_model.load_state_dict(teacher.state_dict(), strict=True)
        if o.vq_ckpt:
            from ..loading import load_tokenizer
            init = load_tokenizer(o.vq_ckpt, config=self.model_config)
            tok.load_state_dict(init.state_dict(), strict=True)
        for part, method in ((tok.encoder, o.enc_tuning_method), (tok.decoder, o.dec_tuning_method)):
            backbone = getattr(part, "model", part)  # the timm ViT inside a ViT part; a conv part is its own
            apply_tuning(backbone, method, r=o.lora_r, alpha=o.lora_alpha, dropout=o.lora_dropout)
        if o.freeze_codes:  # only post_quant_conv and the decoder learn; the codes of every picture stay put
            for name, part in tok.named_children():
                if name not in ("decoder", "post_quant_conv"):
                    part.requires_grad_(False)
        for q in tok.quantizes:  # phi convs no scale uses never get a gradient; DDP needs them marked frozen
            K = len(q.v_patch_nums)
            used = {q.quant_resi.index(si, K) for si in range(K)}
            for i, phi in enumerate(q.quant_resi.qresi_ls):
                if i not in used:
                    phi.requires_grad_(False)
        self.tok = tok.to(dev)
        self.ema = EMA(self.tok, o.ema_decay) if o.ema else None
        self.eval_tok = copy.deepcopy(self.tok).eval() if o.ema else self.tok
        self.module = self.tok
        if o.compile:
            self.module = torch.compile(self.module)
        if self.info.world_size > 1:
            self.module = DDP(self.module, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.params = [p for p in self.tok.parameters() if p.requires_grad]
        self.opt = adamw(param_groups(self.tok, o.weight_decay), o.lr, (o.beta1, o.beta2), dev)
        self.perceptual = (build_perceptual(o.perceptual_net, o.perceptual_weights).to(dev)
                           if o.perceptual_weight > 0 else None)
        self.disc = self.disc_module = None
        self.disc_start = o.disc_start if o.disc_start is not None else o.disc_epoch_start * schedule.steps_per_epoch
        if o.disc_type != "none":
            kw: dict[str, Any] = {}
            if o.disc_type == "patchgan":
                kw = dict(ndf=o.disc_dim, n_layers=o.disc_num_layers)
            elif o.disc_type == "stylegan":
                kw = dict(channels=o.disc_dim)
            else:
                kw = dict(model_name=o.disc_model, pretrained=parse_pretrained(o.disc_pretrained))
            self.disc = build_discriminator(o.disc_type, self.model_config.image_size, **kw).to(dev)
            self.disc_module = DDP(self.disc, device_ids=[dev.index] if dev.type == "cuda" else None) \
                if self.info.world_size > 1 else self.disc
            self.disc_params = [p for p in self.disc.parameters() if p.requires_grad]
            self.opt_d = adamw(param_groups(self.disc, o.disc_weight_decay), o.disc_lr or o.lr,
                               (o.beta1, o.beta2), dev)
            self.lecam = LeCam().to(dev) if o.lecam_loss_weight else None

    # one step ----------------------------------------------------------------------------------------------------
    def _rec_loss(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(recon, x) if self.opts.reconstruction_loss == "l1" else F.mse_loss(recon, x)

    def _disc_input(self, x: torch.Tensor) -> torch.Tensor:
        """DiffAugment (with probability aug_prob) and the fading blur of discriminator inputs."""
        o = self.opts
        if o.aug_fade_steps > 0:
            fade = 1.0 - min(1.0, (self.step - self.disc_start) / (o.aug_fade_steps + 1))
            if fade > 1e-6:
                x = torch.lerp(x, gaussian_blur(x, [5, 5], [1.0, 1.0]), fade)
        if o.disc_augment and torch.rand(()) < o.aug_prob:
            x = diff_augment(x, o.disc_augment)
        return x

    def train_step(self, micro) -> dict[str, float]:
        o, dev = self.opts, self.device
        self.module.train()
        use_disc = self.disc is not None and self.step >= self.disc_start
        sums: dict[str, float] = {}
        recons = []

        def add(name: str, value: torch.Tensor | float) -> None:
            v = value.detach() if isinstance(value, torch.Tensor) else value
            sums[name] = sums.get(name, 0.0) + float(v) / len(micro)

        if self.disc is not None:
            self.disc.requires_grad_(False)  # the generator step must not touch the discriminator
        for i, batch in enumerate(micro):
            x = batch.images.to(dev, non_blocking=True)
            with self.no_sync(self.module, i == len(micro) - 1), self.autocast():
                out = self.module(x, gather_fn=gather_with_grad, reduce_fn=all_reduce_)
                recon = out.recon.float()
                rec = self._rec_loss(recon, x)
                nll = o.reconstruction_weight * rec
                if self.perceptual is not None:
                    p_loss = self.perceptual(recon, x)
                    nll = nll + o.perceptual_weight * p_loss
                    add("perceptual", p_loss)
                vq = o.codebook_weight * (out.losses["codebook"] + out.losses["commitment"])
                loss = nll + vq + out.losses.get("semantic", 0.0)
                if use_disc:
                    g = g_loss(o.gen_loss, self.disc(self._disc_input(recon)))  # not the DDP wrapper: no sync
                    w = adaptive_weight(nll, g, self.tok.decoder.last_layer) if o.disc_adaptive_weight else 1.0
                    loss = loss + w * o.disc_weight * g
                    add("gen_adv", g)
                    add("adaptive_weight", w)
                self.backward(loss / len(micro), "tokenizer")
            recons.append(recon.detach())
            add("loss", loss)
            add("rec", rec)
            add("vq", vq)
            if "semantic" in out.losses:
                add("semantic", out.losses["semantic"])
        sums["recent_usage_finest"] = float(sum(recent_usage(q.ema_vocab_hit_SV)[-1] for q in self.tok.quantizes)
                                            / len(self.tok.quantizes))
        lr = self.lr_now(o.lr)
        stepped, gnorm = self.optimizer_step("tokenizer", self.opt, self.params, lr)
        self.note_nonfinite(stepped, "tokenizer loss or gradients")
        if stepped and self.ema is not None:
            self.ema.update(self.tok)
        sums.update(lr=lr, grad_norm=gnorm)
        if use_disc:
            sums.update(self._disc_step(micro, recons))
        return sums

    def _disc_step(self, micro, recons) -> dict[str, float]:
        o, dev = self.opts, self.device
        self.disc.requires_grad_(True)
        if hasattr(self.disc, "backbone"):
            self.disc.backbone.requires_grad_(False)
        total, lecam_total = 0.0, 0.0
        for i, (batch, recon) in enumerate(zip(micro, recons)):
            x = batch.images.to(dev, non_blocking=True)
            with self.no_sync(self.disc_module, i == len(micro) - 1), self.autocast():
                real = self.disc_module(self._disc_input(x)).float()
                fake = self.disc_module(self._disc_input(recon)).float()
                loss = d_loss(o.disc_loss, real, fake)
                if self.lecam is not None:
                    reg = self.lecam(real, fake)
                    means = all_reduce_(torch.stack([real.detach().mean(), fake.detach().mean()]))
                    means = means / self.info.world_size  # every process keeps the same LeCam averages
                    self.lecam.update(means[0], means[1])
                    loss = loss + o.lecam_loss_weight * reg
                    lecam_total += float(reg.detach()) / len(micro)
                self.backward(loss / len(micro), "disc")
            total += float(loss.detach()) / len(micro)
        lr = self.lr_now(o.disc_lr or o.lr)
        stepped, _ = self.optimizer_step("disc", self.opt_d, self.disc_params, lr)
        self.note_nonfinite(stepped, "discriminator loss or gradients")
        broadcast_buffers_(self.disc)  # running statistics updated after DDP's own broadcast: keep replicas equal
        return {"disc": total, **({"lecam": lecam_total} if self.lecam is not None else {})}

    # validation ------------------------------------------------------------------------------------------------
    def _eval_model(self) -> Tokenizer:
        if self.ema is not None:
            self.ema.copy_to(self.eval_tok)
        return self.eval_tok.eval()

    def _rfid_extractor(self):
        """Inception when its weights load, else the classifier teacher's features (``auto``); None: no rFID."""
        from ..metrics.extractors import DomainExtractor
        from ..metrics.inception import InceptionExtractor, InceptionUnavailable
        spec, o = self.opts.rfid_features, self.opts
        if spec == "none":
            return None
        if spec.startswith("domain:"):
            return DomainExtractor(spec[len("domain:"):], self.device)
        if spec not in ("auto", "inception"):
            raise TrainingError(f"rfid_features must be auto, inception, domain:DIR or none; got {spec!r}")
        try:
            return InceptionExtractor(o.inception_weights, self.device)
        except (InceptionUnavailable, FileNotFoundError) as e:
            if spec == "inception":
                raise TrainingError(str(e)) from None
            if o.semantic_teacher:
                self.log.line(f"rFID in the classifier teacher's feature space (Inception unavailable: {e})")
                return DomainExtractor(o.semantic_teacher, self.device)
            self.log.line(f"no rFID: Inception weights unavailable ({e}) and no classifier teacher")
            return None

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        val = self._val_dataset()
        if val is None:
            return {}
        tok, dev, c = self._eval_model(), self.device, self.model_config
        counts, quality = CodeCounts(c.product_quant, c.num_scales, c.codebook_size, dev), ReconstructionQuality()
        if self._rfid is None and self.opts.rfid_features != "none":
            self._rfid = self._rfid_extractor() or False
        reals, fakes, grid = [], [], None
        for x, _ in validation_batches(self, val):
            x = x.to(dev)
            with self.autocast():
                codes = tok.encode(x)
                recon = tok.decode(codes).float()
            counts.add(codes)
            quality.add(recon, x)
            if self._rfid:
                reals.append(self._rfid.features_and_logits(to_uint8(x))[0].double().cpu())
                fakes.append(self._rfid.features_and_logits(to_uint8(recon))[0].double().cpu())
            if grid is None and self.info.is_main:
                grid = (x[:8], [r.float() for r in tok.reconstruct_per_scale(x[:8])])
        all_reduce_(counts.hits_PKV)
        everyone = ReconstructionQuality()
        for part in all_gather_object(quality):  # every process's images (the means do not depend on the order)
            everyone.extend(part)
        used = counts.usage()  # (P, K)
        metrics = {"psnr": everyone.psnr, "ssim": everyone.ssim, "usage": counts.usage_finest()}
        for p in range(c.product_quant):
            for si in range(c.num_scales):
                metrics[f"usage_b{p}_s{si}"] = float(used[p, si])
        if self._rfid:
            from ..metrics.fid import FeatureStats
            parts = all_gather_object((torch.cat(reals) if reals else None, torch.cat(fakes) if fakes else None))
            real = torch.cat([r for r, _ in parts if r is not None])
            fake = torch.cat([f for _, f in parts if f is not None])
            space = self._rfid.feature_space
            metrics["rfid"] = FeatureStats.from_features(real, space).frechet_distance(
                FeatureStats.from_features(fake, space))
        if grid is not None:
            from ..viz import progression_grid
            self.log.image("val/reconstructions_per_scale", progression_grid(grid[0].cpu(), [g.cpu() for g in grid[1]]),
                           self.step)
        return metrics

    # saving ----------------------------------------------------------------------------------------------------
    def export(self, out_dir: Path) -> None:
        """The (EMA) weights, LoRA merged, in the inference format ``load_tokenizer`` reads."""
        plain = Tokenizer(self.model_config)
        plain.load_state_dict({k: v.cpu() for k, v in merged_state_dict(self._eval_model()).items()}, strict=True)
        save_model(plain, "tokenizer", self.model_config, out_dir)

    def model_states(self) -> dict[str, Any]:
        s = {"tokenizer": self.tok.state_dict(), "opt": self.opt.state_dict(),
             "usage_updates": [q.usage_updates for q in self.tok.quantizes]}  # a counter outside the state dict
        if self.ema is not None:
            s["ema"] = self.ema.state_dict()
        if self.disc is not None:
            s["disc"] = self.disc.state_dict()
            s["opt_d"] = self.opt_d.state_dict()
            if self.lecam is not None:
                s["lecam"] = self.lecam.state_dict()
        return s

    def load_model_states(self, states: dict[str, Any]) -> None:
        self.tok.load_state_dict(states["tokenizer"], strict=True)
        for q, n in zip(self.tok.quantizes, states["usage_updates"]):
            q.usage_updates = n
        self.opt.load_state_dict(states["opt"])
        if self.ema is not None:
            if "ema" not in states:
                raise TrainingError("the checkpoint has no EMA weights but ema is on; set ema: false to resume it")
            self.ema.load_state_dict(states["ema"])
        if self.disc is not None and "disc" in states:
            self.disc.load_state_dict(states["disc"], strict=True)
            self.opt_d.load_state_dict(states["opt_d"])
            if self.lecam is not None and "lecam" in states:
                self.lecam.load_state_dict(states["lecam"])
