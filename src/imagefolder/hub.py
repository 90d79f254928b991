"""Checkpoints on the Hugging Face hub, fetched through the hub client's own cache (one copy per file, shared with
every other tool that uses the client; ``HF_HOME`` / ``HF_HUB_CACHE`` move it, ``HF_HUB_OFFLINE=1`` reads it
without asking the hub, ``HF_ENDPOINT`` names another hub).

Spec forms, accepted wherever a checkpoint is (``resolve`` turns them into local paths):

* a short name of ``releases.RELEASES`` (``imagenet-4096``, ``var-imagenet-d16``, ...);
* ``hf://OWNER/REPO/PATH/FILE.pt``: one file (``.pt .pth .ckpt .bin .safetensors``), optionally pinned with
  ``@REVISION`` at the end, or in the client's own form ``hf://OWNER/REPO@REVISION/PATH``;
* ``hf://OWNER/REPO`` or ``hf://OWNER/REPO/SUBFOLDER``: a folder of our format (``config.json`` +
  ``model.safetensors``, and a generator's ``tokenizer/`` folder); all files come from the same commit.

Integrity: the client checks the size; we check the content. A file the hub stores in LFS is cached under its
etag, which is its SHA-256, and a small git file under its git blob hash: the cached file must hash to that name.
A short name's recorded ``sha256``, when known, must match too. A checked file is remembered (path, size,
modification time) in ``.imagefolder-verified.json`` in the hub cache, so gigabytes are hashed once. Pickles fetched this way are still opened only by
``official.safe_torch_load`` (``weights_only=True`` and the allowlist).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import folder_files, read_config
from .errors import CheckpointError
from .releases import RELEASES, Release

PREFIX = "hf://"
FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
FOLDER_FILES = ("config.json", "model.safetensors")   # what our format needs; README.md is optional
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")


# appended to the help of every command-line option that takes a checkpoint
SPEC_HELP = (". Also a released model by short name (imagenet-4096, imagenet-var-4096, var-imagenet-d16, ...: the "
             "README's table), a file on the Hugging Face hub as hf://OWNER/REPO/FILE[@REVISION], or a folder of our "
             "format there as hf://OWNER/REPO[/FOLDER]; fetched once into the hub client's cache (HF_HOME), read from "
             "it with HF_HUB_OFFLINE=1")


class HubError(CheckpointError):
    """A hub checkpoint cannot be fetched or is not what it should be; the message says which and why."""


class HubUnavailableError(HubError):
    """No cached copy and no way to reach the hub. ``for_option`` adds the command-line option to pass it with."""

    def __init__(self, spec: str, message: str):
        super().__init__(message)
        self.spec = spec

    def for_option(self, option: str) -> str:
        return f"{self}; pass the local copy as {option}"


class IntegrityError(HubError):
    """A fetched file does not hash to what it should."""


@dataclass(frozen=True)
class HubRef:
    """Where a spec points on the hub."""
    spec: str                       # as written by the user
    repo_id: str
    path: str                       # a file, or a folder ("" = the repository's root) of our format
    revision: str | None = None     # None: the main branch
    repo_type: str = "model"
    sha256: str | None = None       # expected SHA-256 (short names that record it)
    release: Release | None = None

    @property
    def is_file(self) -> bool:
        return self.path.endswith(FILE_SUFFIXES)

    @property
    def where(self) -> str:
        at = f" at revision {self.revision}" if self.revision else ""
        return f"the hub repository {self.repo_id}{at}"


def is_hub_spec(spec: Any) -> bool:
    """True for an ``hf://`` spec, or a short name that is not also a local path."""
    if not isinstance(spec, (str, Path)):
        return False
    text = str(spec)
    return text.startswith(PREFIX) or (text in RELEASES and not Path(text).exists())


def parse(spec: str | Path) -> HubRef:
    """The ``HubRef`` of a hub spec (see ``is_hub_spec``); a malformed one raises HubError."""
    text = str(spec)
    if not text.startswith(PREFIX):
        rel = RELEASES.get(text)
        if rel is None:
            raise HubError(f"{text}: not a released checkpoint name (known: {', '.join(sorted(RELEASES))})")
        return HubRef(text, rel.repo_id, rel.filename, rel.revision, "model", rel.sha256, rel)
    body = text[len(PREFIX):]
    tail = body.partition("/")[2]
    name = tail.split("/", 1)[0]
    revision = None
    if "@" in name:   # the client's form: hf://OWNER/REPO@REVISION/PATH
        uri = text
    elif "@" in body:  # ours: hf://OWNER/REPO/PATH@REVISION
        body, _, revision = body.rpartition("@")
        uri = PREFIX + body
    else:
        uri = text
    from huggingface_hub.errors import HfUriError
    from huggingface_hub.utils import parse_hf_uri
    try:
        parsed = parse_hf_uri(uri)
    except HfUriError as e:
        raise HubError(f"{text}: not a hub checkpoint spec ({_first_line(e)}); write hf://OWNER/REPO/FILE"
                       "[@REVISION] or hf://OWNER/REPO[/FOLDER]") from None
    if parsed.type == "bucket":
        raise HubError(f"{text}: a storage bucket, not a repository; write hf://OWNER/REPO/FILE")
    path = parsed.path_in_repo.strip("/")
    if path.rsplit("/", 1)[-1] in FOLDER_FILES:   # hf://o/r/sub/config.json names the folder sub
        path = path.rpartition("/")[0]
    return HubRef(text, parsed.id, path, revision or parsed.revision or None, parsed.type)


def resolve(spec: Any) -> Any:
    """A local path for a hub spec (fetched into, or found in, the hub client's cache); anything else unchanged."""
    if not is_hub_spec(spec):
        return spec
    ref = parse(spec)
    return fetch_file(ref) if ref.is_file else fetch_folder(ref)


def companion_tokenizer(spec: Any) -> str | None:
    """For a short name of a generator file that holds no tokenizer: the short name of its tokenizer."""
    if isinstance(spec, (str, Path)) and is_hub_spec(spec) and not str(spec).startswith(PREFIX):
        return RELEASES[str(spec)].tokenizer
    return None


def fetch_file(ref: HubRef) -> Path:
    """The cached copy of one file, downloaded first when there is none; checked (see the module docstring)."""
    path = _download(ref, ref.path, ref.revision)
    verify(path, ref.sha256, ref.spec)
    return path


def fetch_folder(ref: HubRef) -> Path:
    """The cached folder holding our format's files, all taken from one commit."""
    sub = f"{ref.path}/" if ref.path else ""
    first = _download(ref, sub + FOLDER_FILES[0], ref.revision)
    commit = _snapshot_commit(first)
    verify(first, None, ref.spec)
    for name in folder_files(read_config(first))[1:]:   # a generator's tokenizer/ too
        verify(_download(ref, sub + name, commit or ref.revision), None, ref.spec)
    return first.parent


def _snapshot_commit(path: Path) -> str | None:
    """The commit a cached file was resolved at (the cache keeps files under ``snapshots/COMMIT/``)."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def _download(ref: HubRef, filename: str, revision: str | None) -> Path:
    """``hf_hub_download`` with its failures turned into one-line HubErrors."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub import errors as hub_errors
    name = f"{filename} of {ref.where}"
    try:
        return Path(hf_hub_download(ref.repo_id, filename, repo_type=ref.repo_type, revision=revision,
                                    library_name="imagefolder"))
    except hub_errors.LocalEntryNotFoundError:
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        what = (f"download {filename} from {ref.repo_id} ({_url(ref, filename, revision)}) by hand" if ref.is_file
                else f"download {' and '.join(FOLDER_FILES)} of {'/'.join(filter(None, (ref.repo_id, ref.path)))} "
                     "into one folder by hand")
        raise HubUnavailableError(ref.spec, f"{ref.spec}: no cached copy in {constants.HF_HUB_CACHE} and the hub "
                                  f"cannot be reached{offline}; {what}") from None
    except hub_errors.RemoteEntryNotFoundError:
        hint = "" if ref.is_file else f" (a folder of our format holds {' and '.join(FOLDER_FILES)})"
        raise HubError(f"{ref.spec}: {ref.where} has no file {filename}{hint}") from None
    except hub_errors.RevisionNotFoundError:
        raise HubError(f"{ref.spec}: {ref.repo_id} has no revision {revision}") from None
    except hub_errors.RepositoryNotFoundError:
        raise HubError(f"{ref.spec}: no repository {ref.repo_id} on the hub (or it is private or gated: log in "
                       "with 'hf auth login' or set HF_TOKEN)") from None
    except hub_errors.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise HubError(f"{ref.spec}: the hub answered HTTP {status} for {name}") from None
    except (ValueError, hub_errors.HFValidationError) as e:
        raise HubError(f"{ref.spec}: {_first_line(e)}") from None
    except OSError as e:  # e.g. the client's size check after a broken download
        raise HubError(f"{ref.spec}: downloading {name} failed ({_first_line(e)}); try again") from None


def _url(ref: HubRef, filename: str, revision: str | None) -> str:
    from huggingface_hub import hf_hub_url
    return hf_hub_url(ref.repo_id, filename, repo_type=ref.repo_type, revision=revision)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# integrity --------------------------------------------------------------------------------------------------------
MEMO_NAME = ".imagefolder-verified.json"   # in the hub cache: blob path -> [size, mtime_ns, sha256] already checked


def _memo_file() -> Path:
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE) / MEMO_NAME


def _memo_read() -> dict[str, list]:
    try:
        memo = json.loads(_memo_file().read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _memo_sha256(blob: Path, st: os.stat_result) -> str | None:
    """The SHA-256 found for this very file (same path, size and modification time) by an earlier check."""
    entry = _memo_read().get(str(blob))
    if isinstance(entry, list) and len(entry) == 3 and entry[:2] == [st.st_size, st.st_mtime_ns]:
        return str(entry[2])
    return None


def _memo_remember(blob: Path, st: os.stat_result, sha256: str) -> None:
    """Remember a checked file, so the next process does not hash gigabytes again (best effort: a read-only
    cache just means hashing again)."""
    from .checkpoint import atomic_write
    memo = {k: v for k, v in _memo_read().items() if Path(k).exists()}
    memo[str(blob)] = [st.st_size, st.st_mtime_ns, sha256]
    try:
        atomic_write(_memo_file(), lambda tmp: Path(tmp).write_text(json.dumps(memo, indent=0)))
    except OSError:
        pass


def verify(path: str | Path, expected_sha256: str | None, spec: str) -> str:
    """Check a cached file against the hash the hub named it by and against ``expected_sha256``; return its
    SHA-256. Raises IntegrityError naming the file on a mismatch."""
    path = Path(path)
    # the cache links snapshots/COMMIT/FILE to blobs/ETAG (which may itself link into a shared store: read one link)
    etag = Path(os.readlink(path)).name if path.is_symlink() else ""
    blob = Path(os.path.realpath(path))
    st = blob.stat()
    sha256 = _memo_sha256(blob, st)
    if sha256 is None:
        sha256, git_sha1 = file_hashes(blob, git=bool(_GIT_SHA1.fullmatch(etag)))
        bad = ("SHA-256" if _SHA256.fullmatch(etag) and etag != sha256 else
               "git hash" if _GIT_SHA1.fullmatch(etag) and etag != git_sha1 else None)
        if bad is not None:  # damaged in transit or on disk: wrong for every user of the cache, so remove it
            _remove_cached(path)
            raise IntegrityError(f"{spec}: the downloaded file does not match the hub's {bad} ({etag}); removed it "
                                 f"from the cache ({path.name}): fetch it again")
        _memo_remember(blob, st, sha256)
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise IntegrityError(f"{spec}: refused: the file's SHA-256 is {sha256}, the release records "
                             f"{expected_sha256.lower()} (file {blob})")
    return sha256


def _remove_cached(pointer: Path) -> None:
    """Delete a cached file: its snapshot link and the blob entry it links to."""
    blob_entry = (pointer.parent / os.readlink(pointer)) if pointer.is_symlink() else None
    for p in (pointer, blob_entry):
        if p is not None and (p.is_symlink() or p.exists()):
            p.unlink()


def file_hashes(path: str | Path, git: bool = False) -> tuple[str, str | None]:
    """SHA-256 of a file and, with ``git``, its git blob hash (SHA-1 of ``blob SIZE\\0`` + content)."""
    path = Path(path)
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(f"blob {path.stat().st_size}\0".encode()) if git else None
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
    return sha256.hexdigest(), (sha1.hexdigest() if sha1 is not None else None)
