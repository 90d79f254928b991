"""``imagefolder convert``: official -> ours -> official, and one-line errors."""
from __future__ import annotations

import torch

import imagefolder as imf
from imagefolder.cli import main

from conftest import DATA


def test_convert_tokenizer_both_ways(tmp_path, capsys, ref):
    assert main(["convert", str(DATA / "tiny_tokenizer.pt"), "--out", str(tmp_path / "ours")]) == 0
    assert "wrote tokenizer" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "ours"), "--out", str(tmp_path / "back.pt")]) == 0
    a = imf.load_tokenizer(DATA / "tiny_tokenizer.pt").reconstruct(ref["x"])
    b = imf.load_tokenizer(tmp_path / "back.pt").reconstruct(ref["x"])
    assert torch.equal(a, b)


def test_convert_var_needs_and_takes_the_tokenizer_shape(tmp_path, capsys):
    assert main(["convert", str(DATA / "tiny_var.pt"), "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tokenizer=" in err and "Traceback" not in err
    assert main(["convert", str(DATA / "tiny_var.pt"), "--out", str(tmp_path / "g"), "--tokenizer", "tiny"]) == 0
    assert imf.load_generator(tmp_path / "g").config.depth == 2


def test_convert_refuses_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nonsense")
    assert main(["convert", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.pt" in err and err.count("\n") == 1
