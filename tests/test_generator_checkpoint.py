"""Our generator directories: the generator's own weights with its tokenizer in ``tokenizer/`` (format version 2),
and the one-file layout of version 1 (the tokenizer's keys under a prefix), which still loads."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import imagefolder as imf
from imagefolder import checkpoint


def _write_version_1(gen, folder):
    """A generator directory as imagefolder wrote it before version 2: one state dict, one config."""
    folder.mkdir(parents=True)
    state = {**{f"tokenizer.{k}": v for k, v in gen.tokenizer.state_dict().items()}, **gen.state_dict()}
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors",
              metadata={"format": "imagefolder", "kind": "generator"})
    meta = {"format": "imagefolder", "version": 1, "kind": "generator", "config": gen.config.to_dict()}
    (folder / "config.json").write_text(json.dumps(meta))


def test_a_generator_directory_keeps_its_tokenizer_beside_it(tmp_path, tiny_generator, ref):
    out = imf.save_generator(tiny_generator, tmp_path / "gen")
    meta = json.loads((out / "config.json").read_text())
    assert meta["version"] == 2 and checkpoint.folder_files(meta) == (
        "config.json", "model.safetensors", "tokenizer/config.json", "tokenizer/model.safetensors")
    assert load_file(out / "model.safetensors").keys() == tiny_generator.state_dict().keys()
    assert json.loads((out / "tokenizer" / "config.json").read_text())["kind"] == "tokenizer"
    tok = imf.load_tokenizer(out / "tokenizer")  # a tokenizer directory of its own
    torch.testing.assert_close(tok.reconstruct(ref["x"]), tiny_generator.tokenizer.reconstruct(ref["x"]),
                               rtol=0, atol=0)
    gen = imf.load_generator(out)
    torch.testing.assert_close(gen.generate(ref["labels"], seed=2, top_k=8),
                               tiny_generator.generate(ref["labels"], seed=2, top_k=8), rtol=0, atol=0)
    (out / "tokenizer" / "model.safetensors").unlink()
    with pytest.raises(imf.CheckpointError, match="tokenizer.model.safetensors: weights file missing"):
        imf.load_generator(out)


def test_a_version_1_generator_directory_still_loads(tmp_path, tiny_generator, ref):
    old = tmp_path / "old"
    _write_version_1(tiny_generator, old)
    gen = imf.load_generator(old)
    torch.testing.assert_close(gen.generate(ref["labels"], seed=2, top_k=8),
                               tiny_generator.generate(ref["labels"], seed=2, top_k=8), rtol=0, atol=0)
    tok = imf.load_tokenizer(old)
    torch.testing.assert_close(tok.reconstruct(ref["x"]), tiny_generator.tokenizer.reconstruct(ref["x"]),
                               rtol=0, atol=0)
    new = imf.save_generator(gen, tmp_path / "new")  # re-saved in version 2
    assert not [k for k in load_file(new / "model.safetensors") if k.startswith("tokenizer")]
