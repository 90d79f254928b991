"""One pass of feature extractors over an image set, and the numbers ``imagefolder evaluate`` derives from it.

``extract`` reads a set once and runs every extractor on each batch; with ``originals`` (reconstruction mode) it
also reads the paired originals, scores each pair (``ReconstructionQuality``) and extracts their features as the
reference. ``space_metrics`` turns one feature space's results into FID, IS, precision / recall
and class accuracy, leaving out what the inputs cannot give.

Glossary: ``N`` images, ``B`` batch, ``D`` feature size, ``K`` classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .extractors import FeatureExtractor
from .fid import FeatureStats, inception_score, precision_recall
from .classes import class_accuracy
from .image_quality import ReconstructionQuality
from ..data.images import ImageError
from .imagesets import ImageSet

IS_SPLITS = 10   # the usual number of Inception Score parts
PRC_K = 3        # k of the k-NN manifolds (precision / recall)


@dataclass
class SpaceFeatures:
    """One extractor's outputs over a set, on the CPU."""

    feat_ND: torch.Tensor
    logits_NK: torch.Tensor


@dataclass
class Extracted:
    samples: list[SpaceFeatures]                   # one per extractor, in the order given
    originals: list[SpaceFeatures] | None = None   # reconstruction mode: the paired originals
    quality: ReconstructionQuality = field(default_factory=ReconstructionQuality)  # reconstruction mode


def _to_B3HW(batch_BHW3: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch_BHW3).permute(0, 3, 1, 2)


def extract(images: ImageSet, extractors: Sequence[FeatureExtractor], batch_size: int, workers: int = 1,
            originals: ImageSet | None = None, desc: str = "features") -> Extracted:
    """Run every extractor over ``images`` (and the paired ``originals``) in one pass."""
    feats: list[list[torch.Tensor]] = [[] for _ in extractors]
    logits: list[list[torch.Tensor]] = [[] for _ in extractors]
    ofeats: list[list[torch.Tensor]] = [[] for _ in extractors]
    ologits: list[list[torch.Tensor]] = [[] for _ in extractors]
    out = Extracted(samples=[])
    pair_batches = originals.batches(batch_size, workers) if originals is not None else None
    with tqdm(total=len(images), desc=desc, unit="img", disable=None) as bar:
        for batch in images.batches(batch_size, workers):
            x_B3HW = _to_B3HW(batch)
            o_B3HW = _to_B3HW(next(pair_batches)) if pair_batches is not None else None
            if o_B3HW is not None:
                if o_B3HW.shape != x_B3HW.shape:
                    raise ImageError(f"reconstructions are {tuple(x_B3HW.shape[-2:])} but originals "
                                     f"{tuple(o_B3HW.shape[-2:])} (H, W); give --image-size to crop the originals")
                out.quality.add_8bit(x_B3HW.double() / 255, o_B3HW.double() / 255)
            for i, ex in enumerate(extractors):
                f, lg = ex.features_and_logits(x_B3HW)
                feats[i].append(f.cpu())
                logits[i].append(lg.cpu())
                if o_B3HW is not None:
                    f, lg = ex.features_and_logits(o_B3HW)
                    ofeats[i].append(f.cpu())
                    ologits[i].append(lg.cpu())
            bar.update(len(batch))
    out.samples = [SpaceFeatures(torch.cat(f), torch.cat(lg)) for f, lg in zip(feats, logits)]
    if originals is not None:
        out.originals = [SpaceFeatures(torch.cat(f), torch.cat(lg)) for f, lg in zip(ofeats, ologits)]
    return out


def space_metrics(samples: SpaceFeatures, extractor: FeatureExtractor, ref_stats: FeatureStats | None,
                  ref: SpaceFeatures | None, labels_N: np.ndarray | None, notes: list[str]) -> dict[str, Any]:
    """FID (against ``ref_stats``), IS, precision / recall (against ``ref``) and class accuracy (with labels) in
    one feature space; what cannot be computed is left out with a line in ``notes``."""
    n = len(samples.feat_ND)
    out: dict[str, Any] = {"fid_features": extractor.feature_space}
    if extractor.weights_sha256:
        out["weights_sha256"] = extractor.weights_sha256
    if ref_stats is not None:
        d, n_ref = samples.feat_ND.shape[1], ref_stats.n
        if min(n, n_ref or n) <= d:
            notes.append(f"{extractor.feature_space}: FID from {min(n, n_ref or n)} images for {d} features: the "
                         "covariances are singular and FID depends strongly on the set sizes; compare it only with "
                         "FIDs of equal set sizes")
        if n >= 2:
            stats = FeatureStats.from_features(samples.feat_ND, extractor.feature_space, extractor.weights_sha256)
            out["fid"] = stats.frechet_distance(ref_stats)
        else:
            notes.append(f"{extractor.feature_space}: FID needs at least 2 samples")
    out["is_mean"], out["is_std"] = inception_score(samples.logits_NK, IS_SPLITS)
    out["is_splits"] = min(IS_SPLITS, n)
    if ref is not None:
        if min(n, len(ref.feat_ND)) > PRC_K:
            out["precision"], out["recall"] = precision_recall(ref.feat_ND, samples.feat_ND, k=PRC_K)
            out["prc_k"] = PRC_K
        else:
            notes.append(f"{extractor.feature_space}: precision/recall need more than {PRC_K} images in each set")
    if labels_N is not None:
        out["class_accuracy"] = class_accuracy(samples.logits_NK, labels_N)
    return out
