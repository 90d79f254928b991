"""PSNR and SSIM: known values, properties, and agreement with a direct numpy SSIM written from the definition."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imagefolder.metrics import psnr, ssim


def _numpy_ssim(x_CHW: np.ndarray, y_CHW: np.ndarray, data_range: float) -> float:
    """Wang et al. (2004) by the letter: for every 11x11 window (valid positions), Gaussian-weighted means, variances
    and covariance of the centred values; mean over positions, then over channels."""
    t = np.arange(11) - 5.0
    g = np.exp(-t ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for xc, yc in zip(x_CHW, y_CHW):
        px = np.lib.stride_tricks.sliding_window_view(xc, (11, 11))  # (H-10, W-10, 11, 11)
        py = np.lib.stride_tricks.sliding_window_view(yc, (11, 11))
        mx = np.einsum("ijkl,kl->ij", px, w)
        my = np.einsum("ijkl,kl->ij", py, w)
        dx, dy = px - mx[..., None, None], py - my[..., None, None]
        vx = np.einsum("ijkl,kl->ij", dx * dx, w)
        vy = np.einsum("ijkl,kl->ij", dy * dy, w)
        cxy = np.einsum("ijkl,kl->ij", dx * dy, w)
        s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        values.append(s.mean())
    return float(np.mean(values))


def test_identical_images_give_ssim_one_and_infinite_psnr():
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()


def test_psnr_of_a_constant_offset_matches_the_formula():
    x = torch.full((1, 3, 12, 12), 0.25, dtype=torch.float64)
    for data_range, offset in [(1.0, 0.1), (255.0, 3.0), (2.0, 0.5)]:
        expected = 10 * math.log10(data_range ** 2 / offset ** 2)
        assert psnr(x * data_range, x * data_range + offset, data_range).item() == pytest.approx(expected, abs=1e-9)


def test_psnr_of_gaussian_noise_is_near_its_expected_value():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 64, 64, dtype=torch.float64)
    sigma = 0.05
    value = psnr(x, x + sigma * torch.randn_like(x))
    assert value.shape == (4,)
    torch.testing.assert_close(value, torch.full((4,), 10 * math.log10(1 / sigma ** 2), dtype=torch.float64),
                               rtol=0, atol=0.1)


def test_ssim_of_two_flat_images_is_the_luminance_term():
    # no variance anywhere: SSIM = (2ab + C1) / (a^2 + b^2 + C1), computed by hand for a = 0.5, b = 0.6
    a = torch.full((1, 3, 20, 20), 0.5, dtype=torch.float64)
    b = torch.full((1, 3, 20, 20), 0.6, dtype=torch.float64)
    assert ssim(a, b).item() == pytest.approx((2 * 0.5 * 0.6 + 1e-4) / (0.25 + 0.36 + 1e-4), abs=1e-12)


def test_ssim_is_symmetric_below_one_for_noise_and_negative_for_an_inverted_image():
    torch.manual_seed(1)
    x = torch.rand(3, 3, 32, 32)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    s = ssim(x, y)
    torch.testing.assert_close(s, ssim(y, x), rtol=0, atol=1e-12)
    assert ((s > 0.3) & (s < 1)).all()
    assert (ssim(x, y, data_range=1.0) < ssim(x, (x + 0.02 * torch.randn_like(x)).clamp(0, 1))).all()
    assert (ssim(x, 1 - x) < 0).all()


def test_ssim_matches_a_direct_numpy_implementation():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 24, 19))
    y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
    ours = ssim(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    ref = [_numpy_ssim(x[i], y[i], 1.0) for i in range(2)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)
    ours_255 = ssim(torch.from_numpy(x * 255), torch.from_numpy(y * 255), data_range=255.0).numpy()
    np.testing.assert_allclose(ours_255, ref, rtol=0, atol=1e-10)  # SSIM does not depend on the unit


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 15))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="B, C, H, W"):
        psnr(torch.rand(3, 16, 16), torch.rand(3, 16, 16))


def test_ssim_does_not_depend_on_the_memory_layout():
    torch.manual_seed(0)
    x_BHW3, y_BHW3 = torch.rand(4, 16, 16, 3), torch.rand(4, 16, 16, 3)  # as images are read from files
    strided = ssim(x_BHW3.permute(0, 3, 1, 2), y_BHW3.permute(0, 3, 1, 2))
    dense = ssim(x_BHW3.permute(0, 3, 1, 2).contiguous(), y_BHW3.permute(0, 3, 1, 2).contiguous())
    assert torch.equal(strided, dense)
