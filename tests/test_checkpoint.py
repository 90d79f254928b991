"""checkpoint.atomic_write: permissions, and a failed write leaves the old file and no temporary behind."""
import os
import stat

import pytest

from imagefolder.checkpoint import atomic_write


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write(tmp_path / "atomic.txt", lambda tmp: open(tmp, "w").write("y"))
    assert (tmp_path / "atomic.txt").read_text() == "y"
    assert _mode(tmp_path / "atomic.txt") == _mode(plain)


def test_a_writer_that_recreates_the_file_gets_the_same_permissions(tmp_path):
    """safetensors' save_file replaces the temporary with a new 0600 file; the result must still be readable."""
    import torch
    from safetensors.torch import save_file
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write(tmp_path / "model.safetensors", lambda tmp: save_file({"w": torch.zeros(2)}, tmp))
    assert _mode(tmp_path / "model.safetensors") == _mode(plain)


def test_atomic_write_follows_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "private.txt", lambda tmp: open(tmp, "w").write("y"))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "private.txt") == 0o600
    atomic_write(tmp_path / "shared.txt", lambda tmp: open(tmp, "w").write("y"))
    assert _mode(tmp_path / "shared.txt") == 0o666 & ~old


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_text("old")

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
