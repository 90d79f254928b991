from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


def parse_keys(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """The reference key listing: key -> (shape, dtype)."""
    out = {}
    for line in (DATA / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        out[key] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype)
    return out


@pytest.fixture(scope="session")
def ref() -> dict:
    return torch.load(DATA / "tiny_ref.pt", weights_only=True)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    import imagefolder as imf
    return imf.load_tokenizer(DATA / "tiny_tokenizer.pt")


@pytest.fixture(scope="session")
def tiny_generator():
    import imagefolder as imf
    return imf.load_generator(DATA / "tiny_var.pt", tokenizer=DATA / "tiny_tokenizer.pt")
