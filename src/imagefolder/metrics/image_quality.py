"""PSNR and SSIM of image batches, one value per image, and the one definition of a reconstruction's quality.

``psnr`` and ``ssim`` take images ``(B, C, H, W)`` with values in ``[0, data_range]``: ``data_range=1`` for images
in [0, 1], ``255`` for 8-bit values. Images in [-1, 1] must be mapped to [0, 1] first (``(x + 1) / 2``): PSNR
depends only on the range's width, but SSIM's constants assume values start at 0.

**Reconstruction quality** (``ReconstructionQuality``: what the tokenizer trainer's validation, ``imagefolder
evaluate --recon-of``, ``imagefolder reconstruct`` and the demo report) is measured on the 8-bit pictures a PNG
keeps: both images are clamped to their range and rounded to 256 levels (``to_8bit``), PSNR / SSIM are taken per
image in [0, 1], and the means are exactly rounded sums (``math.fsum``) over the images, so neither batching nor
the order of the images changes a number. An identical pair has an infinite PSNR (and makes the mean infinite);
images smaller than SSIM's window get SSIM NaN.

SSIM is Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, evaluated where the
window lies fully inside the image ("valid"), averaged over positions and then over channels. It is computed in
float64. (skimage's default, a 7x7 uniform window with sample covariances, gives different numbers.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data.images import to_uint8  # noqa: F401  (re-exported: what feature extractors read)

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
    # contiguous: the filters' rounding must not depend on the memory layout (images read from files are HWC)
    x, y = x_BCHW.double().contiguous(), y_BCHW.double().contiguous()
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


def to_8bit(x_B3HW: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> [0, 1] on the 256 levels of an 8-bit PNG (float64)."""
    return to_uint8(x_B3HW).double().div(255)


@dataclass
class ReconstructionQuality:
    """Per-image PSNR / SSIM of reconstructions against their originals, gathered batch by batch (module
    docstring: the definition)."""

    psnr_N: list[float] = field(default_factory=list)
    ssim_N: list[float] = field(default_factory=list)

    def add(self, recon_B3HW: torch.Tensor, original_B3HW: torch.Tensor) -> None:
        """A batch of reconstructions and originals, both in [-1, 1]."""
        self.add_8bit(to_8bit(recon_B3HW), to_8bit(original_B3HW))

    def add_8bit(self, recon01_B3HW: torch.Tensor, original01_B3HW: torch.Tensor) -> None:
        """A batch already on the 8-bit grid, in [0, 1] (``uint8 / 255``: images read from files)."""
        x, y = recon01_B3HW.double(), original01_B3HW.double()
        self.psnr_N += psnr(x, y).tolist()
        self.ssim_N += (ssim(x, y).tolist() if min(x.shape[-2:]) >= WINDOW_SIZE else [math.nan] * len(x))

    def extend(self, other: "ReconstructionQuality") -> None:
        """Append another part's images (e.g. another process's share of a validation set)."""
        self.psnr_N += other.psnr_N
        self.ssim_N += other.ssim_N

    def __len__(self) -> int:
        return len(self.psnr_N)

    @property
    def psnr(self) -> float:
        """Mean PSNR in dB over the images (NaN for none)."""
        return _mean(self.psnr_N)

    @property
    def ssim(self) -> float:
        return _mean(self.ssim_N)

    @property
    def identical_pairs(self) -> int:
        return sum(math.isinf(v) for v in self.psnr_N)


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan
