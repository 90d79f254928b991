"""imagefolder.allocator: glibc's malloc keeps freed memory (the imagefolder command applies it at start)."""
import ctypes
import sys

import pytest

from imagefolder import allocator
from imagefolder.cli import main


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and ctypes.CDLL(None).gnu_get_libc_version() is not None
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_the_settings_apply_on_glibc_and_the_environment_can_refuse_them(monkeypatch):
    assert allocator.keep_freed_memory() is True
    monkeypatch.setenv(allocator.ENV, "system")
    assert allocator.keep_freed_memory() is False


def test_the_command_applies_them_before_anything_else(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert calls == [1]
