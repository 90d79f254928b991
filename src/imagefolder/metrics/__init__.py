"""Evaluation: every metric the project reports, each defined once, for the trainers' validation, ``evaluate``,
``reconstruct``, ``probe`` and the demo.

* ``image_quality``: PSNR, SSIM, and ``ReconstructionQuality`` (the one definition of a reconstruction's PSNR / SSIM:
  on the 8-bit pictures).
* ``codebook``: codebook usage over a set (``CodeCounts``) and the training-time recent usage.
* ``classes``: class accuracy (and its standard error) of a classifier's logits.
* ``fid``, ``extractors``, ``inception``, ``imagesets``, ``evaluation``: FID / IS / precision-recall in a feature
  space, the image sets ``evaluate`` reads and its pass over them.
* ``probe``: linear probing of a tokenizer's branches; ``code_stability``: codes that flip under invisible noise.
"""
from .image_quality import ReconstructionQuality, psnr, ssim, to_8bit, to_uint8

__all__ = ["ReconstructionQuality", "psnr", "ssim", "to_8bit", "to_uint8"]
