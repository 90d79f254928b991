"""Short names for the released checkpoints on the Hugging Face hub: where each file is, what it holds, what its
authors measured with it and, where we know it, its sha256.

``load_tokenizer("imagenet-4096")``, ``load_generator("var-imagenet-d16")`` and every CLI option that takes a
checkpoint accept these names (``hub.py`` fetches the file through the hub client's cache). A local path of the
same name wins over a short name, and a short name never shadows a preset (the names are disjoint).

Integrity: ``sha256`` is the file's expected SHA-256. None means we have not seen the file (it was published
after, or out of reach of, the machine this list was written on); then only the hub's own LFS etag (the SHA-256
the hub records for an LFS file) is checked. A file whose hash differs from the expected one is refused.
``register`` adds or replaces a name (tests point one at a local hub; users may pin a hash they measured).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Release:
    """One released file (or folder of our format, when ``filename`` is a folder) on the hub."""
    name: str                      # the short name
    repo_id: str                   # OWNER/REPO on the hub
    filename: str                  # the file's path in the repository
    kind: str                      # "tokenizer" or "generator"
    what: str                      # one line for the README table and --help
    sha256: str | None = None      # expected SHA-256 of the file; None: unknown here (the hub's LFS etag is checked)
    revision: str | None = None    # a pinned commit or tag; None: the repository's main branch
    tokenizer: str | None = None   # for a generator file that holds no tokenizer: the short name of its tokenizer
    params: str = ""               # parameter count, as the authors state it or as the key lists give it
    size: str = ""                 # file size as far as we know it (estimates say so)
    reported: dict[str, float] = field(default_factory=dict)  # the authors' numbers (ImageNet 256x256)
    source: str = ""               # where the reported numbers come from

    @property
    def spec(self) -> str:
        """The same file as an ``hf://`` spec."""
        rev = f"@{self.revision}" if self.revision else ""
        return f"hf://{self.repo_id}/{self.filename}{rev}"


IMAGEFOLDER_REPO = "ang9867/imagefolder"
VAR_REPO = "FoundationVision/var"
_IF_SOURCE = "the ImageFolder authors' README (200 epochs; rFID on ImageNet val, gFID on 50k samples)"
_VAR_SOURCE = "VAR's README model zoo (FID on 50k samples, cfg 1.5)"

_BUILTIN = (
    Release("imagenet-4096", IMAGEFOLDER_REPO, "imagenet-4096.pt", "tokenizer",
            "ImageFolder tokenizer, 4096 codes per branch, 2 branches x 11 scales (286 tokens)",
            params="172 M trainable + 86 M frozen teacher",
            size="unknown (>= 1 GB: 258 M fp32 parameters, model and EMA copies)",
            reported={"rFID": 0.80}, source=_IF_SOURCE),
    Release("imagenet-8192", IMAGEFOLDER_REPO, "imagenet-8192.pt", "tokenizer",
            "ImageFolder tokenizer, 8192 codes per branch", params="172 M trainable + 86 M frozen teacher",
            size="unknown (>= 1 GB)", reported={"rFID": 0.70}, source=_IF_SOURCE),
    Release("imagenet-16384", IMAGEFOLDER_REPO, "imagenet-16384.pt", "tokenizer",
            "ImageFolder tokenizer, 16384 codes per branch", params="172 M trainable + 86 M frozen teacher",
            size="unknown (>= 1 GB)", reported={"rFID": 0.67}, source=_IF_SOURCE),
    Release("imagenet-var-4096", IMAGEFOLDER_REPO, "imagenet-var-4096.pt", "generator",
            "ImageFolder depth-17 generator with its 4096-code tokenizer inside",
            params="362 M (generator; 375 M with the class embedding), + the 258 M tokenizer",
            size="unknown (>= 2.5 GB: 633 M fp32 parameters)", reported={"gFID": 2.60}, source=_IF_SOURCE),
    Release("var-imagenet-vqvae", VAR_REPO, "vae_ch160v4096z32.pth", "tokenizer",
            "VAR's VQVAE: 4096 codes, 10 scales 1..16 (680 tokens)", params="108.9 M",
            size="~436 MB (estimate: fp32 parameters)", source=_VAR_SOURCE),
    Release("var-imagenet-d16", VAR_REPO, "var_d16.pth", "generator", "VAR depth 16 (its tokenizer: "
            "var-imagenet-vqvae)", tokenizer="var-imagenet-vqvae", params="310 M",
            size="~1.24 GB (estimate)", reported={"FID": 3.55}, source=_VAR_SOURCE),
    Release("var-imagenet-d20", VAR_REPO, "var_d20.pth", "generator", "VAR depth 20",
            tokenizer="var-imagenet-vqvae", params="601 M", size="~2.4 GB (estimate)", reported={"FID": 2.95},
            source=_VAR_SOURCE),
    Release("var-imagenet-d24", VAR_REPO, "var_d24.pth", "generator", "VAR depth 24",
            tokenizer="var-imagenet-vqvae", params="1.03 B", size="~4.1 GB (estimate)", reported={"FID": 2.33},
            source=_VAR_SOURCE),
    Release("var-imagenet-d30", VAR_REPO, "var_d30.pth", "generator", "VAR depth 30",
            tokenizer="var-imagenet-vqvae", params="2.01 B", size="~8.0 GB (estimate)", reported={"FID": 1.97},
            source=_VAR_SOURCE),
)

RELEASES: dict[str, Release] = {r.name: r for r in _BUILTIN}


def register(release: Release) -> Release:
    """Add (or replace) a short name; returns the release."""
    RELEASES[release.name] = release
    return release


def unregister(name: str) -> None:
    """Remove a short name (tests clean up what they registered)."""
    RELEASES.pop(name, None)


def release_for_file(path: str) -> Release | None:
    """The release whose file has the name of ``path`` (for hints when a local copy is missing)."""
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    return next((r for r in RELEASES.values() if r.filename.lower() == name.lower()), None)


def release_names(kind: str | None = None) -> list[str]:
    """The short names, of one ``kind`` ("tokenizer", "generator") or all, sorted."""
    return sorted(n for n, r in RELEASES.items() if kind is None or r.kind == kind)
