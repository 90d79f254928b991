"""How fast a tokenizer learns on a CPU: conv (``cnn``) against ViT (``dinov2``) at comparable parameter counts,
trained for the same wall-clock minutes on the built-in 32 px shapes, measured in one run.

    python benchmarks/bench_tokenizer_learning.py [--minutes 4] [--threads 2]

Every model trains from scratch with the same quantizer (two branches of 256 codes, scales ending at the latent
grid), L2 loss only, batch 16, Adam-W lr 1e-3 (cosine over the time budget, so each run decays fully), EMA 0.999,
then its EMA weights are validated on the same 500 validation pictures (PSNR of the reconstructions). The first
row is the baseline the ratios are taken against.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from _timing import machine

from imagefolder.data.make_dataset import make_dataset
from imagefolder.distributed import DistInfo
from imagefolder.train.options import TOKENIZER_ACCEPTED_ONLY, TokenizerTrainOptions, load_options
from imagefolder.train.tokenizer_trainer import TokenizerTrainer

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
VIT = {"model_preset": "tiny", "image_size": 32, "patch_size": 4, "num_latent_tokens": 36,
       "v_patch_nums": [1, 2, 3, 4, 5, 6], "drop_path_rate": 0.0}
MODELS = {  # name -> model keys (the ViTs: the demo's former recipe, LayerScale 1, sin-cos start)
    "ViT depth 2, width 128": {**VIT, "vit_kwargs": {"embed_dim": 128, "depth": 2, "num_heads": 4, "init_values": 1.0}},
    "ViT depth 4, width 128": {**VIT, "vit_kwargs": {"embed_dim": 128, "depth": 4, "num_heads": 4, "init_values": 1.0}},
    "CNN 32/64, 1 res block per level": {"model_preset": "cnn-small", "num_res_blocks": 1},
    "CNN 32/64, 2 res blocks per level (cnn-small)": {"model_preset": "cnn-small"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=4.0, help="training time per model")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_dataset("shapes", tmp / "data", size=32, train_per_class=500, val_per_class=50, seed=0)
        for name, keys in MODELS.items():
            values = {**keys, "codebook_size": 256, "codebook_embed_dim": 8, "product_quant": 2,
                      "semantic_guide": "none", "codebook_drop": 0.1, "start_drop": 2, "pretrained_backbone": False,
                      "data_path": str(tmp / "data" / "train"), "val_data_path": str(tmp / "data" / "val"),
                      "global_batch_size": 16, "epochs": 1000, "lr": 1e-3, "warmup_steps": 100, "ema_decay": 0.999,
                      "time_budget_minutes": args.minutes, "perceptual_weight": 0.0, "disc_type": "none",
                      "num_workers": 0, "val_every": 10 ** 9, "val_max_images": 500, "log_every": 1000,
                      "ckpt_every": 10 ** 9, "tensorboard": False, "rfid_features": "none"}
            opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, None, values)
            trainer = TokenizerTrainer(opts, model, tmp / name.replace(" ", "_").replace("/", "-"), CPU,
                                       show_progress=False)
            summary = trainer.fit()
            params = sum(p.numel() for p in trainer.tok.parameters())
            rows.append((name, params, summary["steps"], summary["images_per_s"], summary["last_val"]["psnr"]))
            print(f"{name}: {summary['steps']} steps, {summary['images_per_s']:.1f} images/s, "
                  f"{summary['last_val']['psnr']:.2f} dB", flush=True)
    print(f"\n{'model':48s} {'params':>8s} {'steps':>6s} {'images/s':>9s} {'vs first':>8s} {'val PSNR':>9s}")
    for name, params, steps, ips, psnr in rows:
        print(f"{name:48s} {params / 1e6:7.2f}M {steps:6d} {ips:9.1f} {ips / rows[0][3]:7.2f}x {psnr:8.2f} dB")


if __name__ == "__main__":
    main()
