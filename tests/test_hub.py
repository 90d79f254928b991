"""Checkpoints through the real huggingface_hub client, against a hub served on 127.0.0.1 (tests/_fake_hub.py):
first load downloads into the client's cache, later loads (server stopped, HF_HUB_OFFLINE) read the cache,
revisions pin, short names carry a sha256 that refuses a different file, our format round-trips through push,
and the command line says in one line what to do when nothing can be fetched. Nothing here touches the internet."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import imagefolder as imf
from imagefolder import hub, publish, releases
from imagefolder.releases import Release

from _fake_hub import FakeHub, hub_env, use_hub

DATA = Path(__file__).parent / "data"
TINY_TOK = DATA / "tiny_tokenizer.pt"
VAR_TINY = DATA / "var_tiny"
REPO = "ang9867/imagefolder"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A running fake hub holding the tiny official tokenizer as the authors' imagenet-4096.pt, with the client
    pointed at it and its cache under tmp_path."""
    with FakeHub() as h:
        h.add(REPO, {"imagenet-4096.pt": TINY_TOK.read_bytes(), "README.md": b"# tiny\n"})
        use_hub(monkeypatch, h.endpoint, tmp_path / "hf-cache")
        yield h


@pytest.fixture
def short_name():
    """Register test short names (removed afterwards)."""
    added = []

    def add(**kw) -> Release:
        added.append(kw["name"])
        return releases.register(Release(**kw))
    yield add
    for name in added:
        releases.unregister(name)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return imf.load_tokenizer(TINY_TOK)


def test_first_load_downloads_then_cache_serves_with_server_stopped_and_offline(fake_hub, tmp_path, monkeypatch,
                                                                                 tiny_tokenizer):
    spec = f"hf://{REPO}/imagenet-4096.pt"
    tok = imf.load_tokenizer(spec)
    assert _same_weights(tok, tiny_tokenizer)
    assert ("GET", f"/{REPO}/resolve/main/imagenet-4096.pt") in fake_hub.requests
    blobs = list((tmp_path / "hf-cache" / "models--ang9867--imagefolder" / "blobs").iterdir())
    assert [b.name for b in blobs] == [_sha256(TINY_TOK)]          # one copy, named by its sha256 (LFS etag)
    n = len(fake_hub.requests)
    imf.load_tokenizer(spec)                                        # second load online: HEAD only, no GET
    assert [m for m, _ in fake_hub.requests[n:]] == ["HEAD"]
    fake_hub.stop()
    use_hub(monkeypatch, None, tmp_path / "hf-cache", offline=True)  # as HF_HUB_OFFLINE=1
    assert _same_weights(imf.load_tokenizer(spec), tiny_tokenizer)


def test_server_unreachable_without_cache_is_one_clear_error(fake_hub, monkeypatch):
    import huggingface_hub.utils._http as client_http
    monkeypatch.setattr(client_http.time, "sleep", lambda s: None)  # the client retries with backoff: skip waits
    fake_hub.stop()
    with pytest.raises(hub.HubUnavailableError) as e:
        imf.load_tokenizer(f"hf://{REPO}/imagenet-8192.pt")
    msg = str(e.value)
    assert "\n" not in msg and "no cached copy" in msg and "imagenet-8192.pt" in msg and "by hand" in msg
    assert e.value.for_option("--tokenizer").endswith("pass the local copy as --tokenizer")


def test_revision_pins_a_commit(fake_hub, tiny_tokenizer):
    first = fake_hub.repos[REPO].refs["main"]
    var_bytes = (VAR_TINY / "vae.pth").read_bytes()
    fake_hub.add(REPO, {"imagenet-4096.pt": var_bytes})           # main moves on to another file
    pinned = imf.load_tokenizer(f"hf://{REPO}/imagenet-4096.pt@{first}")
    assert _same_weights(pinned, tiny_tokenizer)
    also = imf.load_tokenizer(f"hf://{REPO}@{first}/imagenet-4096.pt")  # the client's own URI form
    assert _same_weights(also, tiny_tokenizer)
    latest = imf.load_tokenizer(f"hf://{REPO}/imagenet-4096.pt")
    assert latest.config.quant_conv_ks == 3                         # VAR's VQVAE now
    with pytest.raises(hub.HubError, match="no revision v9"):
        imf.load_tokenizer(f"hf://{REPO}/imagenet-4096.pt@v9")


def test_short_name_checks_its_recorded_sha256(fake_hub, short_name, tiny_tokenizer):
    short_name(name="test-good", repo_id=REPO, filename="imagenet-4096.pt", kind="tokenizer", what="test",
               sha256=_sha256(TINY_TOK))
    assert _same_weights(imf.load_tokenizer("test-good"), tiny_tokenizer)
    short_name(name="test-bad", repo_id=REPO, filename="imagenet-4096.pt", kind="tokenizer", what="test",
               sha256=_sha256(VAR_TINY / "vae.pth"))
    with pytest.raises(hub.IntegrityError, match="refused: the file's SHA-256 is"):
        imf.load_tokenizer("test-bad")


def test_download_not_matching_the_hubs_etag_is_refused(fake_hub):
    data = bytearray(TINY_TOK.read_bytes())
    data[len(data) // 2] ^= 0xFF                                    # same size, one byte changed in transit
    fake_hub.serve_wrong_bytes(REPO, "imagenet-4096.pt", bytes(data))
    with pytest.raises(hub.IntegrityError, match="does not match the hub's SHA-256"):
        imf.load_tokenizer(f"hf://{REPO}/imagenet-4096.pt")
    fake_hub.serve_wrong_bytes(REPO, "README.md", b"# tinY\n")      # a small git file: its git blob hash
    with pytest.raises(hub.IntegrityError, match="git hash"):
        hub.fetch_file(hub.HubRef("hf://x", REPO, "README.md"))
    fake_hub.serve_wrong_bytes(REPO, "imagenet-4096.pt", bytes(data[:100]))  # truncated: the client's size check
    with pytest.raises(hub.HubError, match="failed"):
        imf.load_tokenizer(f"hf://{REPO}/imagenet-4096.pt@main")


def test_released_var_generator_brings_its_vqvae(fake_hub, short_name):
    fake_hub.add("FoundationVision/var", {"var_tiny.pth": (VAR_TINY / "var.pth").read_bytes(),
                                          "vae_tiny.pth": (VAR_TINY / "vae.pth").read_bytes()})
    short_name(name="test-vqvae", repo_id="FoundationVision/var", filename="vae_tiny.pth", kind="tokenizer",
               what="test", sha256=_sha256(VAR_TINY / "vae.pth"))
    short_name(name="test-var", repo_id="FoundationVision/var", filename="var_tiny.pth", kind="generator",
               what="test", tokenizer="test-vqvae")
    gen = imf.load_generator("test-var")
    ref = imf.load_generator(VAR_TINY / "var.pth", tokenizer=VAR_TINY / "vae.pth")
    assert _same_weights(gen, ref)


def test_built_in_short_names_point_at_the_released_files():
    assert {r.filename for r in releases.RELEASES.values()} >= {
        "imagenet-4096.pt", "imagenet-8192.pt", "imagenet-16384.pt", "imagenet-var-4096.pt",
        "vae_ch160v4096z32.pth", "var_d16.pth", "var_d20.pth", "var_d24.pth", "var_d30.pth"}
    assert not set(releases.RELEASES) & (set(imf.TOKENIZER_PRESETS) | set(imf.GENERATOR_PRESETS))
    assert releases.RELEASES["var-imagenet-d16"].tokenizer == "var-imagenet-vqvae"
    assert releases.RELEASES["var-imagenet-d16"].spec == "hf://FoundationVision/var/var_d16.pth"
    with pytest.raises(imf.CheckpointError, match="fetched from the hub as 'imagenet-4096'"):
        imf.load_tokenizer("no/such/dir/imagenet-4096.pt")


def test_parse_specs():
    ref = hub.parse("hf://o/r/sub/model.pt@v1.0")
    assert (ref.repo_id, ref.path, ref.revision, ref.is_file) == ("o/r", "sub/model.pt", "v1.0", True)
    ref = hub.parse("hf://o/r@refs/pr/3/sub")
    assert (ref.repo_id, ref.path, ref.revision, ref.is_file) == ("o/r", "sub", "refs/pr/3", False)
    assert hub.parse("hf://o/r/sub/config.json").path == "sub"
    assert hub.parse("hf://o/r").path == ""
    with pytest.raises(hub.HubError, match="not a hub checkpoint spec"):
        hub.parse("hf://")
    assert not hub.is_hub_spec("tiny") and not hub.is_hub_spec(Path("x.pt")) and hub.is_hub_spec("imagenet-4096")


def test_export_push_and_load_our_format_from_the_hub(fake_hub, tmp_path, tiny_tokenizer):
    folder = tmp_path / "export"
    kind, _ = publish.export(TINY_TOK, folder, metrics={"tokenizer_val_psnr": 22.3}, command="imagefolder demo")
    card = (folder / "README.md").read_text()
    assert kind == "tokenizer" and "`tokenizer_val_psnr` | 22.3" in card and "imagefolder demo" in card
    oid, url = publish.push(folder, "me/tiny-tok")
    assert url.endswith(oid) and set(fake_hub.files("me/tiny-tok")) == {"config.json", "model.safetensors",
                                                                          "README.md"}
    assert 'load_tokenizer("hf://me/tiny-tok")' in fake_hub.files("me/tiny-tok")["README.md"].decode()
    assert _same_weights(imf.load_tokenizer("hf://me/tiny-tok"), tiny_tokenizer)
    fake_hub.add("me/models", {f"tok/{n}": fake_hub.files("me/tiny-tok")[n] for n in ("config.json",
                                                                                     "model.safetensors")})
    assert _same_weights(imf.load_tokenizer(f"hf://me/models/tok@{fake_hub.repos['me/models'].refs['main']}"),
                         tiny_tokenizer)
    with pytest.raises(hub.HubError, match="has no file config.json"):
        imf.load_tokenizer("hf://me/models")


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "imagefolder", *args], env=full_env, cwd=cwd, text=True,
                          capture_output=True, timeout=600)


def test_cli_exports_from_the_hub_then_reads_the_cache_offline_and_fails_in_one_line(tmp_path):
    with FakeHub() as h:
        h.add(REPO, {"imagenet-4096.pt": TINY_TOK.read_bytes()})
        env = hub_env(h.endpoint, tmp_path / "hf")   # the client reads HF_ENDPOINT etc. when it is imported
        (tmp_path / "m.json").write_text('{"metrics": {"rfid": 0.8}, "command": "train it"}')
        done = _cli(["export", f"hf://{REPO}/imagenet-4096.pt", "--out", "pub", "--metrics", "m.json"], env,
                    tmp_path)
        assert done.returncode == 0, done.stderr
        assert ("GET", f"/{REPO}/resolve/main/imagenet-4096.pt") in h.requests
    card = (tmp_path / "pub" / "README.md").read_text()
    assert "| `rfid` | 0.8 |" in card and "train it" in card and f"hf://{REPO}/imagenet-4096.pt" in card
    # offline: the checkpoint comes from the cache; its --tokenizer was never fetched, so that fails in one line
    offline = hub_env("http://127.0.0.1:9", tmp_path / "hf", offline=True)
    done = _cli(["convert", f"hf://{REPO}/imagenet-4096.pt", "--out", "c", "--tokenizer",
                 f"hf://{REPO}/imagenet-8192.pt"], offline, tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "imagenet-8192.pt" in lines[0] and "HF_HUB_OFFLINE" in lines[0] and lines[0].endswith("--tokenizer")


def test_cli_missing_file_on_the_hub_is_one_line(fake_hub, tmp_path, capsys):
    from imagefolder.cli import main
    rc = main(["sample", "--generator", f"hf://{REPO}/imagenet-var-4096.pt", "--classes", "1", "--out",
               str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == (f"imagefolder sample: error: hf://{REPO}/imagenet-var-4096.pt: the hub repository "
                               f"{REPO} has no file imagenet-var-4096.pt")


def test_cli_export_refuses_a_used_out_and_push_prints_the_commit(fake_hub, tmp_path, capsys, tiny_tokenizer):
    from imagefolder.cli import main
    out = tmp_path / "pub"
    assert main(["export", f"hf://{REPO}/imagenet-4096.pt", "--out", str(out), "--command", "made by hand"]) == 0
    assert main(["export", str(TINY_TOK), "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["push", str(out), "--repo", "me/cli-tok", "--message", "first"]) == 0
    printed = capsys.readouterr().out
    oid = fake_hub.repos["me/cli-tok"].refs["main"]
    assert f"hf://me/cli-tok@{oid}" in printed
    assert _same_weights(imf.load_tokenizer(f"hf://me/cli-tok@{oid}"), tiny_tokenizer)
    (out / "README.md").unlink()
    assert main(["push", str(out), "--repo", "me/cli-tok"]) == 2
    assert "no README.md" in capsys.readouterr().err


def test_a_checked_file_is_hashed_once(fake_hub, tmp_path, monkeypatch):
    spec = f"hf://{REPO}/imagenet-4096.pt"
    local = hub.resolve(spec)
    memo = (tmp_path / "hf-cache" / hub.MEMO_NAME).read_text()
    assert _sha256(TINY_TOK) in memo
    calls = []
    real = hub.file_hashes
    monkeypatch.setattr(hub, "file_hashes", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert hub.resolve(spec) == local and calls == []               # remembered: not hashed again
    blob = Path(os.path.realpath(local))
    os.utime(blob, ns=(blob.stat().st_atime_ns, blob.stat().st_mtime_ns + 1))  # the file changed (as far as we know)
    assert hub.resolve(spec) == local and len(calls) == 1


def test_metrics_reports_for_the_card(tmp_path):
    report = tmp_path / "fid.json"
    report.write_text('{"mode": "samples", "samples": {"count": 500}, "inception": {"fid": 2.6, "is_mean": 290.5, '
                      '"weights": "x"}, "notes": []}')
    assert publish.read_metrics(report) == ({"samples.count": 500.0, "inception.fid": 2.6,
                                             "inception.is_mean": 290.5}, None)
    report.write_text('{"command": "imagefolder demo", "metrics": {"psnr": 22.3, "ok": true}}')
    assert publish.read_metrics(report) == ({"psnr": 22.3}, "imagefolder demo")


def test_a_generator_folder_travels_with_its_tokenizer(fake_hub, tmp_path):
    folder = tmp_path / "export"
    kind, _ = publish.export(DATA / "tiny_var.pt", folder, tokenizer=TINY_TOK)
    assert kind == "generator" and "its tokenizer beside it in `tokenizer/`" in (folder / "README.md").read_text()
    publish.push(folder, "me/tiny-gen")
    assert set(fake_hub.files("me/tiny-gen")) == {"config.json", "model.safetensors", "tokenizer/config.json",
                                                   "tokenizer/model.safetensors", "README.md"}
    local = imf.load_generator(folder)
    remote = imf.load_generator("hf://me/tiny-gen")  # the tokenizer/ files come from the same commit
    assert _same_weights(remote, local) and _same_weights(remote.tokenizer, local.tokenizer)
