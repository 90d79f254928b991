"""PSNR and SSIM of image batches, one value per image.

Both take images ``(B, C, H, W)`` with values in ``[0, data_range]``: ``data_range=1`` for images in [0, 1],
``255`` for 8-bit values. Images in [-1, 1] must be mapped to [0, 1] first (``(x + 1) / 2``): PSNR depends only on
the range's width, but SSIM's constants assume values start at 0.

SSIM is Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, evaluated where the
window lies fully inside the image ("valid"), averaged over positions and then over channels. It is computed in
float64. (skimage's default, a 7x7 uniform window with sample covariances, gives different numbers.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW_SIZE, WINDOW_SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two image batches (B, C, H, W) of one shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")


def psnr(x_BCHW: torch.Tensor, y_BCHW: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: (B,) float64. Identical images give ``inf``."""
    _check_pair(x_BCHW, y_BCHW)
    mse_B = (x_BCHW.double() - y_BCHW.double()).square().flatten(1).mean(dim=1)
    return 10 * torch.log10(data_range ** 2 / mse_B)


def gaussian_window(size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> torch.Tensor:
    """The normalised 1-D Gaussian (size,) float64; SSIM's 2-D window is its outer product with itself."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-t.square() / (2 * sigma ** 2))
    return g / g.sum()


def _blur(x_BCHW: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of every channel: (B, C, H - k + 1, W - k + 1)."""
    C, k = x_BCHW.shape[1], g.numel()
    x = F.conv2d(x_BCHW, g.view(1, 1, k, 1).expand(C, 1, k, 1), groups=C)
    return F.conv2d(x, g.view(1, 1, 1, k).expand(C, 1, 1, k), groups=C)


def ssim(x_BCHW: torch.Tensor, y_BCHW: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity per image: (B,) float64, 1 for identical images."""
    _check_pair(x_BCHW, y_BCHW)
    if min(x_BCHW.shape[-2:]) < WINDOW_SIZE:
        raise ValueError(f"SSIM needs images of at least {WINDOW_SIZE}x{WINDOW_SIZE}, got {tuple(x_BCHW.shape[-2:])}")
    x, y = x_BCHW.double(), y_BCHW.double()
    g = gaussian_window().to(x.device)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    var_x = _blur(x * x, g) - mu_x.square()
    var_y = _blur(y * y, g) - mu_y.square()
    cov_xy = _blur(x * y, g) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x.square() + mu_y.square() + c1)
    contrast_structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    ssim_map = luminance * contrast_structure
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)
