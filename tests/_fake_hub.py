"""A Hugging Face hub on 127.0.0.1 for tests: the real ``huggingface_hub`` client talks to it over HTTP.

What it answers, as the hub does (read from the client's ``file_download.py``, ``_commit_api.py``, ``hf_api.py``):

* ``HEAD``/``GET /{repo}/resolve/{revision}/{path}``: the file, with ``X-Repo-Commit`` (the commit the revision
  resolves to), ``ETag`` (the git blob hash of a small file; the SHA-256 of an LFS file, also as ``X-Linked-Etag``
  with ``X-Linked-Size``) and ``Content-Length``. No Xet headers, so the client downloads over plain HTTP.
  Unknown repository / revision / file: 404 with ``X-Error-Code`` ``RepoNotFound`` / ``RevisionNotFound`` /
  ``EntryNotFound``, as the client maps them to its errors.
* ``POST /api/repos/create``, ``POST /api/validate-yaml`` (a model card's metadata header),
  ``POST /api/models/{repo}/preupload/{revision}`` (every file "regular", so commits
  carry the content base64-encoded and no LFS/Xet upload is needed), ``POST /api/models/{repo}/commit/{revision}``
  (the client's ndjson: a header line, then one line per file): what ``HfApi.upload_folder`` needs.

Every request is logged in ``FakeHub.requests`` as ``(method, path)``. ``serve_wrong_bytes`` makes the hub send
other bytes than the etag it announces (a corrupted download).
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

LFS_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self) -> None:
        self.commits: dict[str, dict[str, bytes]] = {}
        self.refs: dict[str, str] = {}

    def commit(self, files: dict[str, bytes], branch: str = "main") -> str:
        parent = self.commits.get(self.refs.get(branch, ""), {})
        tree = {**parent, **files}
        sha = hashlib.sha1(json.dumps(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in tree.items())).encode()
                           + str(len(self.commits)).encode()).hexdigest()
        self.commits[sha] = tree
        self.refs[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class FakeHub:
    """``with FakeHub() as hub: hub.add("owner/name", {"file.pt": data})``; ``hub.endpoint`` is its URL."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.wrong_bytes: dict[tuple[str, str], bytes] = {}
        self.validated: list[str] = []   # model cards the client asked to validate
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # content ----------------------------------------------------------------------------------------------------
    def add(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Commit ``files`` (path -> bytes) to ``repo_id`` (created if new); returns the commit hash."""
        return self.repos.setdefault(repo_id, Repo()).commit(files, branch)

    def serve_wrong_bytes(self, repo_id: str, path: str, data: bytes) -> None:
        """Announce the right etag for ``path`` but send ``data`` instead."""
        self.wrong_bytes[(repo_id, path)] = data

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.resolve(revision)]

    # server -----------------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start the hub first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    # helpers ----------------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")  # no keep-alive: once stopped, the hub answers nothing more
        self.close_connection = True
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps({"error": message}).encode(), {"X-Error-Code": code, **(headers or {})})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    # routes -----------------------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._resolve()

    def do_GET(self) -> None:
        self._resolve()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        self.fake.requests.append(("POST", path))
        body = self._body()
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") \
                else f"user/{payload['name']}"
            url = f"{self.fake.endpoint}/{repo_id}"
            if repo_id in self.fake.repos:
                return self._send(409, json.dumps({"error": "You already created this model repo",
                                                   "url": url}).encode())
            self.fake.repos[repo_id] = Repo()
            return self._send(200, json.dumps({"url": url}).encode())
        if path == "/api/validate-yaml":  # the client checks a README.md's metadata header before committing it
            content = json.loads(body)["content"]
            header = content.split("---")[1] if content.startswith("---") else ""
            try:
                ok = isinstance(yaml.safe_load(header) or {}, dict)
            except yaml.YAMLError:
                ok = False
            self.fake.validated.append(content)
            return self._send(200 if ok else 400, json.dumps({"warnings": [], "errors": [] if ok else [
                {"message": "invalid YAML metadata"}]}).encode())
        parts = path.split("/")  # ['', 'api', 'models', owner, name, action, revision...]
        if len(parts) >= 7 and parts[1] == "api" and parts[2] == "models":
            repo_id, action, revision = f"{parts[3]}/{parts[4]}", parts[5], unquote("/".join(parts[6:]))
            if repo_id not in self.fake.repos:
                return self._error(404, "RepoNotFound", "Repository not found")
            if action == "preupload":
                files = json.loads(body)["files"]
                answer = {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                    for f in files]}
                return self._send(200, json.dumps(answer).encode())
            if action == "commit":
                files = {}
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                sha = self.fake.repos[repo_id].commit(files, revision)
                return self._send(200, json.dumps({"commitUrl": f"{self.fake.endpoint}/{repo_id}/commit/{sha}",
                                                   "commitOid": sha, "pullRequestUrl": None}).encode())
        return self._error(404, "NotFound", f"no route {path}")

    def _resolve(self) -> None:
        path = urlsplit(self.path).path
        self.fake.requests.append((self.command, path))
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(404, "NotFound", f"no route {path}")
        repo_id, revision, filename = f"{parts[0]}/{parts[1]}", unquote(parts[3]), unquote("/".join(parts[4:]))
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        data = repo.commits[commit].get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
        headers = {"X-Repo-Commit": commit}
        if filename.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        data = self.fake.wrong_bytes.get((repo_id, filename), data)
        self._send(200, data, headers, content_type="application/octet-stream")


def use_hub(monkeypatch, endpoint: str | None, cache_dir, offline: bool = False) -> None:
    """Point the already-imported client at ``endpoint`` with its cache in ``cache_dir`` (``offline``: as with
    HF_HUB_OFFLINE=1). The client reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE once, into
    ``huggingface_hub.constants``, when it is imported; a test in this process changes those constants (a
    subprocess gets the environment variables instead: ``hub_env``)."""
    from huggingface_hub import constants
    if endpoint is not None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)


def hub_env(endpoint: str, home, offline: bool = False) -> dict[str, str]:
    """Environment variables that point a new process's client at ``endpoint`` with its cache under ``home``."""
    return {"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
            "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_TOKEN": "test-token"}
