"""Tokenizer-training losses: LPIPS perceptual loss, discriminators, GAN objectives and their helpers."""
from .adversarial import GAN_LOSSES, LeCam, adaptive_weight, adopt_weight, d_loss, g_loss
from .diffaug import diff_augment
from .discriminators import (DISCRIMINATORS, DinoDiscriminator, PatchGANDiscriminator, StyleGANDiscriminator,
                             build_discriminator)
from .domain_perceptual import ClassifierPerceptualLoss, build_perceptual
from .perceptual import PerceptualLoss

__all__ = [
    "GAN_LOSSES", "LeCam", "adaptive_weight", "adopt_weight", "d_loss", "g_loss",
    "diff_augment",
    "DISCRIMINATORS", "DinoDiscriminator", "PatchGANDiscriminator", "StyleGANDiscriminator", "build_discriminator",
    "ClassifierPerceptualLoss", "PerceptualLoss", "build_perceptual",
]
