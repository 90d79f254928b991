"""Codes cache: layout and metadata, flips chosen as on the fly, training from the cache identical to tokenizing on
the fly, a cache from another tokenizer refused, unreadable files skipped as on the fly."""
import json
from pathlib import Path

import pytest
import torch
import yaml

import imagefolder as imf
from imagefolder.cli import main
from imagefolder.data.builtin import write_builtin_images
from imagefolder.data.folder import BadItem, ImageFolderDataset, flip_decision
from imagefolder.loading import save_tokenizer
from imagefolder.train.pretokenize import (CodesCacheError, CodesDataset, check_cache_tokenizer, codes_BPL,
                                           read_cache_meta, split_codes, tokenizer_fingerprint)
from imagefolder.train.state import Checkpoints, load_train_state

DATA = Path(__file__).parent / "data"
TRAIN = dict(model_preset="tiny", depth=1, embed_dim=64, num_heads=2, drop_path_rate=0.0, global_batch_size=4,
             epochs=3, lr=3e-3, warmup_steps=2, num_workers=0, log_every=1, ckpt_every=1000, val_every=0,
             tensorboard=False, ema_decay=0.9, cond_drop_rate=0.2, p_drop=0.2, label_smoothing=0.1, hflip=True)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two contended cores: one thread is much faster for these tiny shapes
    root = tmp_path_factory.mktemp("pretok")
    tok = imf.load_tokenizer(DATA / "tiny_tokenizer.pt")  # reference weights: codes depend on the input
    save_tokenizer(tok, root / "tok")
    with torch.no_grad():
        tok.quantizes[0].embedding.weight[0] += 1e-3
    save_tokenizer(tok, root / "other_tok")  # the same configuration, other weights
    write_builtin_images(root / "data" / "train", 12, 64)
    (root / "data" / "train" / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert main(["pretokenize", "--tokenizer", str(root / "tok"), "--data", str(root / "data"), "--out",
                 str(root / "codes.safetensors"), "--batch-size", "5", "--num-workers", "0", "--device", "cpu",
                 "--no-progress"]) == 0
    yield root
    torch.set_num_threads(threads)


def test_cache_layout_metadata_and_flips(env):
    tok = imf.load_tokenizer(env / "tok")
    meta = read_cache_meta(env / "codes.safetensors")
    images = ImageFolderDataset(env / "data" / "train", 64)
    assert meta["classes"] == images.classes and meta["num_images"] == len(images) == 13
    assert meta["tokenizer_fingerprint"] == tokenizer_fingerprint(tok)
    assert imf.TokenizerConfig.from_dict(meta["tokenizer_config"]) == tok.config
    data = CodesDataset(env / "codes.safetensors", flip=True, seed=5)
    assert data.codes_shape == (2, 30) and data.labels == images.labels
    good = [i for i in range(len(images)) if not isinstance(images[i], BadItem)]
    x = torch.stack([images[i][0] for i in good])
    plain, mirrored = codes_BPL(tok.encode(x)), codes_BPL(tok.encode(x.flip(-1)))
    for epoch in (0, 1):
        data.set_epoch(epoch)
        for row, i in enumerate(good):
            codes_PL, label, index = data[i]
            want = mirrored[row] if flip_decision(5, epoch, i) else plain[row]
            assert torch.equal(codes_PL, want) and label == images.labels[i] and index == i
    assert torch.equal(codes_BPL(split_codes(plain, tok.config.v_patch_nums)), plain)
    batch = data.collate([data[i] for i in (*good[:3], *bad_items(images))])  # codes get their own field
    assert batch.images is None and len(batch) == 3 and len(batch.bad) == 1
    assert batch.codes.dtype == torch.int64 and batch.codes.shape == (3, 2, 30)


def bad_items(images) -> list[int]:
    return [i for i in range(len(images)) if isinstance(images[i], BadItem)]


def test_unreadable_file_reported_as_on_the_fly(env):
    data = CodesDataset(env / "codes.safetensors")
    images = ImageFolderDataset(env / "data" / "train", 64)
    bad = [i for i in range(len(images)) if isinstance(images[i], BadItem)]
    assert len(bad) == 1 and data[bad[0]] == images[bad[0]]


def _train(env, out, *extra) -> int:
    cfg = env / "train.yaml"
    cfg.write_text(yaml.safe_dump({**TRAIN, "tokenizer": str(env / "tok"), "data_path": str(env / "data")}))
    return main(["train-generator", "--config", str(cfg), "--out", str(out), "--no-progress", *extra])


def test_training_from_cache_is_identical_to_on_the_fly(env, tmp_path):
    assert _train(env, tmp_path / "fly") == 0
    assert _train(env, tmp_path / "cache", "--codes-cache", str(env / "codes.safetensors")) == 0
    logs = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("fly", "cache")]
    assert len(logs[0]) == 9  # 3 epochs of 3 steps (12 readable images)
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]]
    a, b = (load_train_state(Checkpoints(tmp_path / run).latest())["models"] for run in ("fly", "cache"))
    assert all(torch.equal(v, b["generator"][k]) for k, v in a["generator"].items())


def test_cache_from_another_tokenizer_is_refused(env, tmp_path, capsys):
    meta = read_cache_meta(env / "codes.safetensors")
    other = imf.load_tokenizer(env / "other_tok")
    with pytest.raises(CodesCacheError, match="different tokenizer"):
        check_cache_tokenizer(env / "codes.safetensors", meta, other, tokenizer_fingerprint(other))
    rc = _train(env, tmp_path / "run", "--codes-cache", str(env / "codes.safetensors"), "--tokenizer",
                str(env / "other_tok"))
    assert rc == 2 and "different tokenizer" in capsys.readouterr().err


def test_not_a_cache_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00hello")
    with pytest.raises(CodesCacheError, match="not a safetensors file"):
        read_cache_meta(junk)
    with pytest.raises(FileNotFoundError, match="pretokenize"):
        read_cache_meta(tmp_path / "missing.safetensors")
