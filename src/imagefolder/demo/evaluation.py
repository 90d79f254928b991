"""The evaluation half of the demo: samples of every class, reconstructions of validation images, the numbers.

Everything is judged by the domain classifier (``judge``), trained on the same dataset: its class accuracy on
generated samples, on reconstructions and on the real validation images (the ceiling of the other two), and FID
between samples and validation images in its 128-d feature space. The tokenizer is also measured directly: PSNR /
SSIM of its reconstructions, the share of each finest-scale codebook its validation codes use, and a linear probe
of each branch's quantized features (the semantically regularised branch should carry more class information).
Where recognisability is lost along the scales: the judge's accuracy on images whose first k scales are the codes
of real validation pictures and whose later scales the generator samples (k = 0 is plain sampling, k = all scales
the reconstruction).

Generator labels are the dataset's class folders in sorted order (what the trainers and ``ImageFolderDataset``
use); the judge stores its class names, and they must be the same list.

Glossary: ``N`` images, ``B`` batch, ``K`` classes, ``P`` branches, ``V`` codebook size, ``D`` feature size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.folder import ImageFolderDataset, collate_skip_bad
from ..data.images import ImageError, to_uint8
from ..metrics.classes import accuracy_stderr, class_accuracy
from ..metrics.codebook import CodeCounts
from ..metrics.extractors import DomainExtractor
from ..metrics.image_quality import ReconstructionQuality
from ..models.generator import Generator
from ..models.tokenizer import Tokenizer
from . import DemoError, recipes

BATCH = 64


@dataclass
class EvalImages:
    """Pictures for the report's figures, all in [-1, 1]."""

    samples_N3HW: torch.Tensor     # class by class (``per_class`` each)
    sample_labels_N: torch.Tensor
    originals_B3HW: torch.Tensor   # the validation images of the progression
    steps: list[torch.Tensor]      # K reconstructions of them, after 1, 2, ..., K scales
    completions: list[torch.Tensor]  # K + 1 generator completions of them keeping 0, 1, ..., K scales
    row_labels: list[str]          # the class name of each progression row


def load_split(root: Path, image_size: int, classes: list[str], limit: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) in [-1, 1] and labels (N,) of an ImageFolder split; ``limit`` picks that many spread
    evenly over the split (which is sorted by class)."""
    data = ImageFolderDataset(root, image_size, classes=classes)
    if limit is not None and limit < len(data):
        data = torch.utils.data.Subset(data, torch.linspace(0, len(data) - 1, limit).round().long().tolist())
    images, labels = [], []
    for batch in DataLoader(data, batch_size=256, collate_fn=collate_skip_bad):
        images.append(batch.images)
        labels.append(batch.labels)
    if not images or not sum(len(y) for y in labels):
        raise ImageError(f"{root}: no readable images")
    return torch.cat(images), torch.cat(labels)


def _sampling() -> dict[str, Any]:
    """``Generator.generate`` keyword arguments of the demo's sampling recipe."""
    return {k: recipes.SAMPLING[k] for k in ("cfg", "cfg_schedule", "top_k", "top_p", "seed")}


@torch.no_grad()
def generate_samples(gen: Generator, per_class: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` samples of every class, in class order; image i is drawn from the stream (seed, i)."""
    labels_N = torch.arange(gen.num_classes).repeat_interleave(per_class)
    device = gen.pos_1LC.device
    out = []
    with tqdm(total=len(labels_N), desc="sample", unit="img", disable=None if progress else True) as bar:
        for start in range(0, len(labels_N), BATCH):
            labels = labels_N[start:start + BATCH]
            out.append(gen.generate(labels.to(device), indices=range(start, start + len(labels)),
                                    **_sampling()).cpu())
            bar.update(len(labels))
    return torch.cat(out), labels_N


@torch.no_grad()
def prefix_samples(gen: Generator, x_N3HW: torch.Tensor, labels_N: torch.Tensor, ks: range, progress: bool
                   ) -> dict[int, torch.Tensor]:
    """For each k of ``ks``: images (N, 3, H, W) in [-1, 1] that keep the first k scales of the codes of the real
    pictures ``x`` (in [-1, 1]) and sample the rest for their labels (``recipes.SAMPLING``)."""
    device = gen.pos_1LC.device
    out: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    with tqdm(total=len(x_N3HW) * len(ks), desc="sample from real scales", unit="img",
              disable=None if progress else True) as bar:
        for start in range(0, len(x_N3HW), BATCH):
            x, labels = x_N3HW[start:start + BATCH].to(device), labels_N[start:start + BATCH].to(device)
            codes = gen.tokenizer.encode(x)
            for k in ks:
                out[k].append(gen.generate(labels, indices=range(start, start + len(x)),
                                           prefix=[branch[:k] for branch in codes], **_sampling()).cpu())
                bar.update(len(x))
    return {k: torch.cat(images) for k, images in out.items()}


@torch.no_grad()
def reconstruct(tok: Tokenizer, x_N3HW: torch.Tensor, progress: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstructions (N, 3, H, W) in [-1, 1], and their PSNR / SSIM (``metrics.ReconstructionQuality``) and the
    finest-scale codebook usage (``metrics.codebook.CodeCounts``) of their codes."""
    device = next(tok.parameters()).device
    c = tok.config
    counts, quality = CodeCounts(c.product_quant, c.num_scales, c.codebook_size), ReconstructionQuality()
    recons = []
    with tqdm(total=len(x_N3HW), desc="reconstruct", unit="img", disable=None if progress else True) as bar:
        for start in range(0, len(x_N3HW), BATCH):
            x = x_N3HW[start:start + BATCH].to(device)
            codes = tok.encode(x)
            recon = tok.decode(codes).float()
            counts.add([[idx.cpu() for idx in branch] for branch in codes])
            quality.add(recon.cpu(), x.cpu())
            recons.append(recon.cpu())
            bar.update(len(x))
    return torch.cat(recons), {"psnr": quality.psnr, "ssim": quality.ssim, "usage_finest": counts.usage_finest()}


def _branch_accuracies(probe: dict[str, Any], branches: int) -> tuple[str, float, float]:
    """(name of the semantic branch, its probe accuracy, mean accuracy of the other branches)."""
    semantic = probe["semantic"] if str(probe["semantic"]).startswith("branch") else f"branch{branches - 1}"
    others = [probe[f"branch{p}"] for p in range(branches) if f"branch{p}" != semantic]
    return semantic, probe[semantic], float(np.mean(others)) if others else math.nan


def _judged(judge: DomainExtractor, x_N3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The judge's features (N, D) and logits (N, K) of images in [-1, 1] (as 8-bit pictures)."""
    feats, logits = zip(*(judge.features_and_logits(to_uint8(x_N3HW[i:i + BATCH]))
                          for i in range(0, len(x_N3HW), BATCH)))
    return torch.cat(feats).cpu(), torch.cat(logits).cpu()


def _judge_metrics(judge: DomainExtractor, samples: tuple[torch.Tensor, torch.Tensor],
                   val: tuple[torch.Tensor, torch.Tensor], recons_N3HW: torch.Tensor,
                   notes: list[str]) -> dict[str, float]:
    """The judge's class accuracy on samples, reconstructions and real images, and FID in its feature space of
    samples and of reconstructions against the real images. ``samples`` / ``val``: (images in [-1, 1], labels)."""
    from ..metrics.fid import FeatureStats

    def stats(feat_ND: torch.Tensor) -> FeatureStats:
        return FeatureStats.from_features(feat_ND, judge.feature_space, judge.weights_sha256)

    (f_samples, l_samples), (f_val, l_val), (f_recon, l_recon) = (_judged(judge, x)
                                                                  for x in (samples[0], val[0], recons_N3HW))
    metrics: dict[str, float] = {}
    for key, logits, labels in (("sample_class_accuracy", l_samples, samples[1]),
                                ("reconstruction_class_accuracy", l_recon, val[1]),
                                ("val_class_accuracy", l_val, val[1])):
        acc = class_accuracy(logits, labels.numpy())
        metrics[key] = acc
        metrics[f"{key}_stderr"] = accuracy_stderr(acc, len(labels))
        metrics[f"{key}_per_class"] = [class_accuracy(logits[labels == c], labels[labels == c].numpy())
                                       for c in range(logits.shape[1])]
    for key, feats in (("domain_fid", f_samples), ("reconstruction_domain_fid", f_recon)):
        n = min(len(feats), len(f_val))
        if n <= feats.shape[1]:
            notes.append(f"{key}: {n} images for {feats.shape[1]} features, so the covariances are singular; compare "
                         "it only with FIDs of equal set sizes")
        try:
            metrics[key] = stats(feats).frechet_distance(stats(f_val))
        except ValueError as e:
            metrics[key] = math.nan
            notes.append(f"{key}: not computed ({e})")
    return metrics


def _check_classes(gen: Generator, judge: DomainExtractor, judge_dir: Path, data_dir: Path) -> list[str]:
    folders = sorted(p.name for p in (data_dir / "val").iterdir() if p.is_dir())
    if folders != judge.class_names:
        raise DemoError(f"the judge classifier {judge_dir} knows the classes {judge.class_names}, the data {data_dir} "
                        f"has {folders}: train them on the same dataset")
    if gen.num_classes != len(folders):
        raise DemoError(f"the generator has {gen.num_classes} classes, the data {data_dir} {len(folders)}")
    return folders


def evaluate(gen: Generator, judge_dir: Path, data_dir: Path, device: torch.device, progress: bool,
             notes: list[str]) -> tuple[dict[str, Any], EvalImages]:
    """All the demo's numbers for ``gen`` (and its tokenizer) on ``data_dir`` (train/ and val/), and the images
    for the report. Explanations of anything unusual go to ``notes``."""
    from ..metrics.probe import probe_tokenizer

    tok = gen.tokenizer
    judge = DomainExtractor(judge_dir, device)
    classes = _check_classes(gen, judge, judge_dir, data_dir)
    size = tok.config.image_size
    val_x, val_y = load_split(data_dir / "val", size, classes)
    train_x, train_y = load_split(data_dir / "train", size, classes, limit=recipes.PROBE_MAX_TRAIN)

    samples, sample_y = generate_samples(gen, recipes.SAMPLING["per_class"], progress)
    recons, quality = reconstruct(tok, val_x, progress)
    metrics: dict[str, Any] = _judge_metrics(judge, (samples, sample_y), (val_x, val_y), recons, notes)
    metrics.update(tokenizer_val_psnr=quality["psnr"], tokenizer_val_ssim=quality["ssim"],
                   codebook_usage_finest=quality["usage_finest"])

    spread = torch.linspace(0, len(val_x) - 1, min(recipes.PREFIX_IMAGES, len(val_x))).round().long()
    prefixed = prefix_samples(gen, val_x[spread], val_y[spread], range(1, len(gen.patch_nums)), progress)
    accs = {k: class_accuracy(_judged(judge, images)[1], val_y[spread].numpy()) for k, images in prefixed.items()}
    metrics.update(prefix_class_accuracy={str(k): a for k, a in accs.items()},
                   prefix_class_accuracy_stderr={str(k): accuracy_stderr(a, len(spread)) for k, a in accs.items()},
                   prefix_images=len(spread))

    probe = probe_tokenizer(tok, (train_x, train_y), (val_x, val_y), num_classes=len(classes), progress=progress)
    semantic, sem_acc, detail_acc = _branch_accuracies(probe, tok.num_branches)
    metrics.update(probe_acc_semantic_branch=sem_acc, probe_acc_detail_branch=detail_acc, probe_semantic=semantic,
                   probe_train_images=probe["num_train"], probe_val_images=probe["num_val"],
                   samples=len(samples), val_images=len(val_x), classes=classes)

    rows = _one_per_class(val_y, recipes.RECONSTRUCTION_ROWS)
    steps = [s.float().cpu() for s in tok.reconstruct_per_scale(val_x[rows].to(device))]
    completions = prefix_samples(gen, val_x[rows], val_y[rows], range(len(gen.patch_nums) + 1), progress=False)
    return metrics, EvalImages(samples, sample_y, val_x[rows], steps, list(completions.values()),
                               [classes[int(val_y[i])] for i in rows])


def _one_per_class(labels_N: torch.Tensor, rows: int) -> list[int]:
    """Indices of up to ``rows`` images: the first of each class, then the second of each class, ..."""
    by_class = [torch.nonzero(labels_N == c).flatten().tolist() for c in labels_N.unique().tolist()]
    picks: list[int] = []
    for depth in range(max(len(b) for b in by_class)):
        picks += [b[depth] for b in by_class if depth < len(b)]
    return picks[:rows]
