"""One definition per metric: the tokenizer trainer's validation, the demo's evaluation, ``imagefolder reconstruct``
and ``imagefolder evaluate --recon-of`` (on the PNGs ``reconstruct`` wrote) give the same PSNR / SSIM / codebook
usage for the same images and weights, to the last bit."""
from __future__ import annotations

import json

import pytest
import torch

from imagefolder.cli import main
from imagefolder.distributed import DistInfo
from imagefolder.loading import load_tokenizer
from imagefolder.metrics import ReconstructionQuality, psnr, to_8bit
from imagefolder.metrics.codebook import CodeCounts
from imagefolder.train.options import TOKENIZER_ACCEPTED_ONLY, TokenizerTrainOptions, load_options
from imagefolder.train.tokenizer_trainer import TokenizerTrainer

from _train_helpers import TINY_TOKENIZER, make_image_folder


def test_validation_demo_reconstruct_and_evaluate_agree_exactly(tmp_path):
    from imagefolder.demo.evaluation import load_split, reconstruct
    data = tmp_path / "data"
    make_image_folder(data / "train")
    make_image_folder(data / "val", per_class=3, seed=1)
    # one validation batch everywhere (8 >= 6 images), so every path runs the network on the same batch
    opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, None, {
        **TINY_TOKENIZER, "data_path": str(data / "train"), "val_data_path": str(data / "val"), "global_batch_size": 8,
        "max_steps": 3, "val_every": 3})
    summary = TokenizerTrainer(opts, model, tmp_path / "run", DistInfo(0, 1, 0, torch.device("cpu")),
                               show_progress=False).fit()
    val = summary["last_val"]
    tok = load_tokenizer(tmp_path / "run" / "last")  # the weights that validation measured (EMA)

    val_x, _ = load_split(data / "val", 16, ["class0", "class1"])
    _, demo = reconstruct(tok, val_x, progress=False)

    assert main(["reconstruct", "--tokenizer", str(tmp_path / "run" / "last"), "--images", str(data / "val"),
                 "--out", str(tmp_path / "rec"), "--save-images", "--batch-size", "8", "--grid", "0",
                 "--progression", "0", "--device", "cpu"]) == 0
    rec = json.loads((tmp_path / "rec" / "metrics.json").read_text())
    assert main(["evaluate", str(tmp_path / "rec" / "recon"), "--recon-of", str(data / "val"), "--no-inception",
                 "--out", str(tmp_path / "eval.json"), "--device", "cpu"]) == 0
    ev = json.loads((tmp_path / "eval.json").read_text())["reconstruction"]

    assert ev["pairs"] == len(rec["images"]) == 6
    assert 5 < val["psnr"] < 60 and 0 < val["ssim"] < 1
    assert val["psnr"] == demo["psnr"] == ev["psnr"] and val["ssim"] == demo["ssim"] == ev["ssim"]
    assert rec["mean_psnr"] == round(val["psnr"], 6) and rec["mean_ssim"] == round(val["ssim"], 6)
    assert val["usage"] == demo["usage_finest"] > 0


def test_reconstruction_quality_is_psnr_of_the_8bit_pictures_and_ignores_batching():
    torch.manual_seed(0)
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    y = (x + 0.1 * torch.randn_like(x)).clamp(-1.2, 1.2)  # out of range: clamped like a PNG would be
    whole, parts = ReconstructionQuality(), ReconstructionQuality()
    whole.add(y, x)
    for i in (3, 0, 4, 1, 2):  # another order and batching: the means are exactly rounded sums
        parts.add(y[i:i + 1], x[i:i + 1])
    assert whole.psnr == parts.psnr and whole.ssim == parts.ssim
    assert whole.psnr_N == psnr(to_8bit(y), to_8bit(x)).tolist()
    assert to_8bit(y).mul(255).eq(to_8bit(y).mul(255).round()).all() and to_8bit(y).max() <= 1
    same = ReconstructionQuality()
    same.add(x, x)
    assert same.identical_pairs == 5 and same.psnr == float("inf") and same.ssim == pytest.approx(1.0)
    small = ReconstructionQuality()
    small.add(x[:, :, :8, :8], y[:, :, :8, :8])  # smaller than SSIM's 11x11 window
    assert all(v != v for v in small.ssim_N)


def test_codebook_usage_counts_entries_hit_at_least_once():
    counts = CodeCounts(branches=2, scales=2, codebook_size=4)
    counts.add([[torch.tensor([[0]]), torch.tensor([[0, 1, 1, 1]])],    # branch 0: scales 1x1 and 2x2
                [torch.tensor([[3]]), torch.tensor([[2, 2, 2, 2]])]])   # branch 1
    assert counts.usage().tolist() == [[0.25, 0.5], [0.25, 0.25]]
    assert counts.usage_finest() == 0.375
