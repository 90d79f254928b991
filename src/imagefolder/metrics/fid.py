"""Distribution metrics on feature sets: Fréchet distance, Inception Score, k-NN precision / recall; statistics files.

* ``frechet_distance``: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64 with ``scipy.linalg.sqrtm``.
* ``inception_score`` and ``precision_recall`` call torch-fidelity's implementations (IS over shuffled splits;
  the k-NN manifolds of Kynkäänniemi et al. 2019, computed in chunks).
* ``FeatureStats`` holds the mean and covariance of one feature space. A statistics file (``save_stats``) can
  hold several spaces; ``load_stats`` also reads the ADM evaluator's reference batches, whose ``mu`` / ``sigma``
  are Inception pool features (the space torch-fidelity calls ``inception-v3-compat``).

Glossary: ``N`` samples, ``D`` feature size, ``K`` classes.
"""
from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.linalg
import torch
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_prc import calculate_precision_recall_part

INCEPTION_SPACE = "inception-v3-compat"
SQRTM_EPS = 1e-6       # diagonal offset added to both covariances when their product has no finite square root
IMAG_TOLERANCE = 1e-3  # largest imaginary part on the diagonal of the square root still taken as rounding noise
PRC_CHUNK = 4096       # rows per torch.cdist block in precision_recall


class StatsFileError(ValueError):
    """A statistics file is unreadable or holds no usable statistics; the message names it."""


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2), computed in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.ndim != 1 or mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / "
                         f"{sigma2.shape}")
    with warnings.catch_warnings():  # a singular product (fewer samples than features) is expected; see below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # no finite square root: regularise both covariances a little
        offset = np.eye(mu1.shape[0]) * SQRTM_EPS
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        largest = np.abs(np.diagonal(covmean).imag).max()
        if largest > IMAG_TOLERANCE:
            raise ValueError(f"the covariance product's square root has an imaginary part of {largest:.3g} "
                             "(too few samples for the feature size?)")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(logits_NK: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Mean and standard deviation over ``splits`` parts of exp(E_x KL(p(y|x) || p(y))), p = softmax(logits).

    Rows are shuffled with a fixed seed before splitting (so class-ordered sample sets give unbiased parts); at
    most one part per sample. Uniform predictions give 1; confident predictions spread evenly over K classes give K.
    """
    if logits_NK.ndim != 2 or logits_NK.shape[0] == 0:
        raise ValueError(f"expected logits (N, K) with N >= 1, got {tuple(logits_NK.shape)}")
    out = isc_features_to_metric(logits_NK.detach().cpu(), splits=min(splits, logits_NK.shape[0]))
    return out["inception_score_mean"], out["inception_score_std"]


def precision_recall(real_ND: torch.Tensor, fake_ND: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of balls
    reaching every point's k-th nearest neighbour in that set. Precision: the fraction of fake samples inside the
    real manifold; recall: the fraction of real samples inside the fake manifold."""
    if real_ND.ndim != 2 or fake_ND.ndim != 2 or real_ND.shape[1] != fake_ND.shape[1]:
        raise ValueError(f"expected two feature sets (N, D) of one D, got {tuple(real_ND.shape)} and "
                         f"{tuple(fake_ND.shape)}")
    if min(len(real_ND), len(fake_ND)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples in each set, got "
                         f"{len(real_ND)} real and {len(fake_ND)} fake")
    precision, recall = calculate_precision_recall_part(fake_ND.float(), real_ND.float(), neighborhood=k,
                                                        batch_size=PRC_CHUNK)
    return precision, recall


@dataclass
class FeatureStats:
    """Mean (D,) and covariance (D, D) of ``n`` feature vectors (``n`` None when the file does not say)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None
    feature_space: str                  # e.g. "inception-v3-compat" or "domain:runs/classifier"
    weights_sha256: str | None = None   # the extractor's weights when the name alone does not identify them

    @classmethod
    def from_features(cls, feat_ND: torch.Tensor | np.ndarray, feature_space: str,
                      weights_sha256: str | None = None) -> "FeatureStats":
        feat = np.asarray(feat_ND.cpu() if isinstance(feat_ND, torch.Tensor) else feat_ND, dtype=np.float64)
        if feat.ndim != 2 or feat.shape[0] < 2:
            raise ValueError(f"statistics need at least 2 feature vectors (N, D), got {feat.shape}")
        return cls(feat.mean(axis=0), np.cov(feat, rowvar=False), feat.shape[0], feature_space, weights_sha256)

    def same_space(self, feature_space: str, weights_sha256: str | None) -> bool:
        """Whether these statistics were made by the extractor with this name / weight digest."""
        if self.weights_sha256 is not None or weights_sha256 is not None:
            return self.weights_sha256 == weights_sha256
        return self.feature_space == feature_space

    def frechet_distance(self, other: "FeatureStats") -> float:
        if not other.same_space(self.feature_space, self.weights_sha256):
            raise ValueError(f"cannot compare statistics of {self.feature_space!r} with {other.feature_space!r}")
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma)


def save_stats(path: str | Path, stats: Sequence[FeatureStats]) -> None:
    """Write statistics of one or more feature spaces to ``path`` (an uncompressed ``.npz``), atomically."""
    from ..checkpoint import atomic_write
    arrays: dict[str, np.ndarray] = {"feature_spaces": np.array([s.feature_space for s in stats], dtype=np.str_)}
    for i, s in enumerate(stats):
        arrays[f"mu_{i}"], arrays[f"sigma_{i}"] = s.mu, s.sigma
        arrays[f"n_{i}"] = np.array(-1 if s.n is None else s.n, dtype=np.int64)
        arrays[f"sha256_{i}"] = np.array(s.weights_sha256 or "", dtype=np.str_)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would otherwise append .npz to the temporary name
            np.savez(f, **arrays)
    atomic_write(path, write)


def is_stats_file(keys: Sequence[str]) -> bool:
    """Whether an npz with these keys holds statistics (ours, or an ADM batch's ``mu`` / ``sigma``)."""
    return "feature_spaces" in keys or {"mu", "sigma"} <= set(keys)


def load_stats(path: str | Path) -> list[FeatureStats]:
    """Statistics from one of our files or from an ADM reference batch (its ``mu`` / ``sigma``; ``n`` unknown)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            if "feature_spaces" in keys:
                out = []
                for i, space in enumerate(z["feature_spaces"].tolist()):
                    n, sha = int(z[f"n_{i}"]), str(z[f"sha256_{i}"])
                    out.append(FeatureStats(z[f"mu_{i}"].astype(np.float64), z[f"sigma_{i}"].astype(np.float64),
                                            None if n < 0 else n, space, sha or None))
                return out
            if {"mu", "sigma"} <= set(keys):
                return [FeatureStats(z["mu"].astype(np.float64), z["sigma"].astype(np.float64), None,
                                     INCEPTION_SPACE)]
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise StatsFileError(f"{path}: unreadable statistics file ({e})") from None
    raise StatsFileError(f"{path}: no statistics in it (keys {keys}; expected mu and sigma, or our "
                         "feature_spaces layout)")

