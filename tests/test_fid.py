"""Fréchet distance against closed forms and an independent eigen-decomposition, IS and precision/recall on
sets whose answers are known, and statistics files (ours and the ADM evaluator's reference batches)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imagefolder.metrics.fid import (INCEPTION_SPACE, FeatureStats, StatsFileError, frechet_distance,
                                     inception_score, load_stats, precision_recall, save_stats)


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_diagonal_covariances_match_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    a, b = rng.uniform(0.1, 3, size=8), rng.uniform(0.1, 3, size=8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_general_covariances_match_the_symmetric_form():
    # Tr (S1 S2)^(1/2) = Tr (S1^(1/2) S2 S1^(1/2))^(1/2): a symmetric square root, computed here with eigh
    rng = np.random.default_rng(1)
    d = 12
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    r1 = _psd_sqrt(s1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(_psd_sqrt(r1 @ s2 @ r1))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)


def test_a_set_against_itself_is_zero_also_when_covariances_are_singular():
    rng = np.random.default_rng(2)
    full = FeatureStats.from_features(rng.normal(size=(300, 16)), "test")
    assert abs(full.frechet_distance(full)) < 1e-8
    singular = FeatureStats.from_features(rng.normal(size=(6, 20)), "test")  # rank 5 < 20
    assert np.linalg.matrix_rank(singular.sigma) < 20
    assert abs(singular.frechet_distance(singular)) < 1e-4


def test_shifted_set_distance_is_the_squared_shift():
    rng = np.random.default_rng(3)
    feat = rng.normal(size=(200, 10))
    a = FeatureStats.from_features(feat, "test")
    b = FeatureStats.from_features(feat + 2.0, "test")
    assert a.frechet_distance(b) == pytest.approx(4.0 * 10, rel=1e-6)


def test_statistics_of_different_spaces_are_not_compared():
    a = FeatureStats(np.zeros(3), np.eye(3), 10, "domain:a", weights_sha256="aa")
    b = FeatureStats(np.zeros(3), np.eye(3), 10, "domain:a", weights_sha256="bb")
    with pytest.raises(ValueError, match="cannot compare"):
        a.frechet_distance(b)
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_inception_score_of_known_predictions():
    k = 7
    assert inception_score(torch.zeros(70, k), splits=10) == pytest.approx((1.0, 0.0), abs=1e-9)
    confident = 60.0 * torch.eye(k).repeat(30, 1)  # every image sure of its class, classes equally often
    mean, std = inception_score(confident, splits=1)
    assert mean == pytest.approx(k, rel=1e-6) and std == 0
    mean, _ = inception_score(confident, splits=10)  # shuffled parts: close to K, not above
    assert k * 0.85 < mean <= k + 1e-6
    assert inception_score(confident[:3], splits=10) == (1.0, 0.0)  # 3 one-image parts (not 10 with empty ones)


def test_precision_recall_identical_and_far_apart_sets():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(120, 8, generator=g)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    half = torch.cat([real[:60], real[:60] + 100.0])  # half the fakes on the real manifold
    precision, recall = precision_recall(real, half)
    assert precision == pytest.approx(0.5, abs=1e-9) and 0 < recall < 1
    with pytest.raises(ValueError, match="more than 3 samples"):
        precision_recall(real[:3], real)


def test_stats_file_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    a = FeatureStats.from_features(rng.normal(size=(50, 6)), INCEPTION_SPACE)
    b = FeatureStats(rng.normal(size=4), _random_spd(rng, 4), None, "domain:runs/clf", weights_sha256="ab12")
    save_stats(tmp_path / "ref.npz", [a, b])
    got = load_stats(tmp_path / "ref.npz")
    assert [s.feature_space for s in got] == [INCEPTION_SPACE, "domain:runs/clf"]
    assert got[0].n == 50 and got[0].weights_sha256 is None and got[1].n is None and got[1].weights_sha256 == "ab12"
    for want, have in zip([a, b], got):
        np.testing.assert_array_equal(want.mu, have.mu)
        np.testing.assert_array_equal(want.sigma, have.sigma)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_adm_reference_batch_is_read_as_inception_statistics(tmp_path):
    rng = np.random.default_rng(5)
    mu, sigma = rng.normal(size=5), _random_spd(rng, 5)
    np.savez(tmp_path / "VIRTUAL_ref.npz", arr_0=np.zeros((3, 8, 8, 3), np.uint8), mu=mu, sigma=sigma,
             mu_s=mu[:2], sigma_s=sigma[:2, :2])
    (stats,) = load_stats(tmp_path / "VIRTUAL_ref.npz")
    assert stats.feature_space == INCEPTION_SPACE and stats.n is None and stats.weights_sha256 is None
    np.testing.assert_array_equal(stats.mu, mu)
    np.testing.assert_array_equal(stats.sigma, sigma)


def test_unusable_stats_files_give_clear_errors(tmp_path):
    np.savez(tmp_path / "images.npz", arr_0=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(StatsFileError, match="no statistics"):
        load_stats(tmp_path / "images.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(StatsFileError, match="junk.npz"):
        load_stats(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        load_stats(tmp_path / "missing.npz")
