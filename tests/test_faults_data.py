"""Fault injection, data side: a corpus of bad image files, a training set with no readable image (no hang, in a
real process), 16-bit pictures, empty and foreign class folders, file names that are not UTF-8."""
from __future__ import annotations

import os
import subprocess
import sys
import zlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagefolder.cli import main
from imagefolder.data.folder import BadItem, ImageFolderDataset
from imagefolder.data.images import ImageError, load_image
from imagefolder.distributed import DistInfo
from imagefolder.train.engine import TrainingError

from _train_helpers import TINY_TOKENIZER, make_image_folder, yaml_text

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
DATA = Path(__file__).parent / "data"


def _png(path: Path, width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth,
                                                                        colour_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b""))


def bad_corpus(folder: Path) -> dict[str, bool]:
    """Files of every kind of trouble in ``folder``; name -> whether it should load."""
    folder.mkdir(parents=True, exist_ok=True)
    good = np.full((16, 16, 3), 120, np.uint8)
    Image.fromarray(good).save(folder / "good.png")
    full = folder / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(full)
    (folder / "truncated.png").write_bytes(full.read_bytes()[:60])
    (folder / "empty.png").write_bytes(b"")
    (folder / "garbage.jpg").write_bytes(os.urandom(300))
    Image.new("CMYK", (16, 16), (0, 0, 0, 0)).save(folder / "cmyk.jpg")
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.save(folder / "palette_alpha.png", transparency=0)
    _png(folder / "bomb.png", 40000, 40000, 8, 2, b"")  # claims 1.6 G pixels
    _png(folder / "grey16.png", 16, 16, 16, 0, b"".join(b"\x00" + b"\x80\x00" * 16 for _ in range(16)))
    os.symlink("..", folder / "loop")  # a symlink loop must not make the scan endless
    return {"good.png": True, "full.png": True, "truncated.png": False, "empty.png": False, "garbage.jpg": False,
            "cmyk.jpg": True, "palette_alpha.png": True, "bomb.png": False, "grey16.png": True}


def test_a_bad_corpus_loads_what_it_can_and_names_the_rest(tmp_path):
    expected = bad_corpus(tmp_path / "train" / "c0")
    data = ImageFolderDataset(tmp_path / "train", 16)
    items = {Path(p).name: data[i] for i, (p, _) in enumerate(data.samples)}
    assert set(items) == set(expected)
    for name, loads in expected.items():
        item = items[name]
        assert isinstance(item, BadItem) != loads, name
        if not loads:
            assert name in item.reason  # the reason names the file
        else:
            assert item[0].shape == (3, 16, 16) and torch.isfinite(item[0]).all()
    assert float(items["cmyk.jpg"][0].mean()) == pytest.approx(1.0)  # CMYK (0,0,0,0) is white


def test_16_bit_pictures_are_scaled_not_clipped_to_white(tmp_path):
    grey = np.full((16, 16), 32768, np.uint16)  # the middle of the 16-bit range
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    x = load_image(tmp_path / "grey16.png", 16)
    assert torch.allclose(x, torch.full_like(x, 128 / 127.5 - 1), atol=1e-6)  # was +1 (white) before
    ramp = (np.arange(256, dtype=np.uint16).repeat(16).reshape(16, 256) * 257)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    Image.fromarray((ramp // 257).astype(np.uint8)).save(tmp_path / "ramp8.png")
    assert torch.equal(load_image(tmp_path / "ramp16.png", 16), load_image(tmp_path / "ramp8.png", 16))


def _tokenizer_config(tmp_path: Path, data: Path, **over) -> Path:
    cfg = tmp_path / "tok.yaml"
    cfg.write_text(yaml_text({**TINY_TOKENIZER, "data_path": str(data), **over}))
    return cfg


def test_no_readable_training_image_stops_a_real_run_at_once(tmp_path):
    for c in range(2):  # every file of the set is unreadable
        (tmp_path / "data" / f"c{c}").mkdir(parents=True)
        for i in range(4):
            (tmp_path / "data" / f"c{c}" / f"{i}.png").write_bytes(b"not a picture" * i)
    cfg = _tokenizer_config(tmp_path, tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "imagefolder", "train-tokenizer", "--config", str(cfg), "--out",
                           str(tmp_path / "run"), "--no-progress"], capture_output=True, text=True, timeout=240,
                          env=env)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "not one training item could be read" in err[0] and "0.png" in err[0]
    assert (tmp_path / "run" / "log.txt").stat().st_size < 10_000  # one epoch of skips, not an endless log


def test_the_generator_and_the_codes_cache_refuse_unreadable_data(tmp_path, tiny_tokenizer):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from imagefolder.loading import save_tokenizer
    from imagefolder.train.generator_trainer import GeneratorTrainer
    from imagefolder.train.options import GENERATOR_ACCEPTED_ONLY, GeneratorTrainOptions, generator_config, load_options
    from imagefolder.train.pretokenize import CodesCacheError, CodesDataset, pretokenize

    size = tiny_tokenizer.config.image_size
    bad = tmp_path / "bad"
    for c in range(2):
        (bad / f"c{c}").mkdir(parents=True)
        for i in range(4):
            (bad / f"c{c}" / f"{i}.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageError, match="none of its 8 images could be read"):
        pretokenize(tiny_tokenizer, bad, tmp_path / "bad.safetensors", show_progress=False)
    assert not (tmp_path / "bad.safetensors").exists()

    # a cache written by an older version from such data: every row invalid
    good = make_image_folder(tmp_path / "good", classes=2, per_class=2, size=size)
    pretokenize(tiny_tokenizer, good, tmp_path / "c.safetensors", show_progress=False)
    tensors = load_file(tmp_path / "c.safetensors")
    with safe_open(tmp_path / "c.safetensors", "pt") as f:
        meta = f.metadata()
    save_file({**tensors, "valid": torch.zeros_like(tensors["valid"])}, tmp_path / "c0.safetensors", metadata=meta)
    with pytest.raises(CodesCacheError, match="none of its 4 images was readable"):
        CodesDataset(tmp_path / "c0.safetensors")

    save_tokenizer(tiny_tokenizer, tmp_path / "tok")
    values = dict(model_preset="tiny", depth=1, embed_dim=64, num_heads=2, global_batch_size=4, num_workers=0,
                  tensorboard=False, val_every=0, tokenizer=str(tmp_path / "tok"), data_path=str(bad), epochs=1000)
    opts, _ = load_options(GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY, None, values)
    model_vals = {k: values[k] for k in ("depth", "embed_dim", "num_heads")}
    trainer = GeneratorTrainer(opts, generator_config(opts, model_vals), tmp_path / "gen", CPU, show_progress=False)
    with pytest.raises(TrainingError, match="not one training item could be read"):
        trainer.fit()


def test_the_classifier_refuses_a_set_with_no_readable_image(tmp_path):
    from imagefolder.train.classifier_trainer import train_classifier
    for c in range(2):
        (tmp_path / "d" / "train" / f"c{c}").mkdir(parents=True)
        (tmp_path / "d" / "train" / f"c{c}" / "x.png").write_bytes(b"")
    with pytest.raises(TrainingError, match="not one training item could be read in a whole epoch"):
        train_classifier(tmp_path / "d", tmp_path / "out", image_size=16, batch_size=2, epochs=50, device="cpu",
                         progress=False)
    assert not (tmp_path / "out" / "config.json").exists()  # no classifier, only the run's log


def test_empty_and_foreign_class_folders_are_errors_before_training(tmp_path, capsys):
    data = make_image_folder(tmp_path / "d" / "train")
    (data / "class9").mkdir()  # an empty class folder would silently become a class
    cfg = _tokenizer_config(tmp_path, tmp_path / "d")
    assert main(["train-tokenizer", "--config", str(cfg), "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "class9: a class folder with no images" in err[0]
    (data / "class9").rmdir()

    make_image_folder(tmp_path / "d" / "val", classes=3, per_class=1)  # class2 is not a training class
    assert main(["train-tokenizer", "--config", str(cfg), "--out", str(tmp_path / "b"), "--no-progress",
                 "--val-every", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "class2 are not classes of the training data" in err[0]
    assert not (tmp_path / "b" / "metrics.jsonl").exists()  # found before the first step

    assert main(["train-tokenizer", "--config", str(cfg), "--out", str(tmp_path / "c"), "--no-progress",
                 "--val-every", "3", "--val-data-path", str(tmp_path / "nowhere")]) == 2
    assert "val_data_path" in capsys.readouterr().err and not (tmp_path / "c" / "metrics.jsonl").exists()


def test_an_all_unreadable_validation_set_is_an_error_not_psnr_0(tmp_path, capsys):
    make_image_folder(tmp_path / "d" / "train")
    for c in range(2):
        (tmp_path / "d" / "val" / f"class{c}").mkdir(parents=True)
        (tmp_path / "d" / "val" / f"class{c}" / "v.png").write_bytes(b"broken")
    cfg = _tokenizer_config(tmp_path, tmp_path / "d", val_every=2)
    assert main(["train-tokenizer", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress",
                 "--max-steps", "4"]) == 2
    captured = capsys.readouterr()
    assert "none of the 2 images could be read" in captured.err and "best" not in captured.out
    assert not (tmp_path / "run" / "best").exists()


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_file_names_that_are_not_utf8_are_skipped_and_logged(tmp_path, capsys):
    data = make_image_folder(tmp_path / "d")
    name = os.fsencode(data / "class0") + b"/bad\xff\xfe.png"
    with open(name, "wb") as f:
        f.write(b"garbage")
    cfg = _tokenizer_config(tmp_path, data)
    assert main(["train-tokenizer", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress",
                 "--max-steps", "4"]) == 0
    log = (tmp_path / "run" / "log.txt").read_text(encoding="utf-8")
    assert "skipped unreadable file" in log and r"bad\xff\xfe.png" in log
    assert "skipped 0 non-finite steps and 2 unreadable files" in capsys.readouterr().out  # once per epoch
