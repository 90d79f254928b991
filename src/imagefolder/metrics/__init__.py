"""Image quality and generation metrics."""
from .image_quality import psnr, ssim

__all__ = ["psnr", "ssim"]
