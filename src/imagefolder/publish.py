"""Publishing our format on the hub: ``export`` writes a folder (``config.json``, ``model.safetensors`` and a
``README.md`` model card with the metrics and the command that made the model) without any network; ``push``
uploads such a folder with the hub client (``HfApi.upload_folder``). ``load_tokenizer("hf://OWNER/NAME")`` /
``load_generator(...)`` read it back, as does every command-line option that takes a checkpoint.
"""
from __future__ import annotations

import datetime
import json
import math
import sys
from pathlib import Path
from typing import Any

from . import checkpoint as ours
from .errors import CheckpointError

CARD_NAME = "README.md"


def published_files(meta: dict[str, Any]) -> tuple[str, ...]:
    """What ``push`` uploads from a folder with this ``config.json``: the model's files and the card."""
    return (*ours.folder_files(meta), CARD_NAME)

REPO_PLACEHOLDER = "OWNER/NAME"


def read_metrics(path: str | Path) -> tuple[dict[str, float], str | None]:
    """Numbers and the command from a JSON report: ``{"metrics": {...}, "command": "..."}`` (what ``demo`` and
    ``ablate`` write), ``evaluate``'s report (blocks such as ``{"inception": {"fid": ...}}`` become
    ``inception.fid``) or a flat ``{name: number}``. Non-numeric entries are left out."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable JSON report ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: a JSON report is an object of metric names to numbers")
    block = data.get("metrics", data)
    flat: dict[str, Any] = {}
    for k, v in (block.items() if isinstance(block, dict) else ()):
        if isinstance(v, dict):
            flat.update({f"{k}.{k2}": v2 for k2, v2 in v.items()})
        else:
            flat[str(k)] = v
    metrics = {k: float(v) for k, v in flat.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
    command = data.get("command")
    return metrics, (str(command) if command else None)


def export(spec: Any, out: str | Path, *, tokenizer: Any = None, metrics: dict[str, float] | None = None,
           command: str | None = None, title: str | None = None, source_note: str | None = None) -> tuple[str, Path]:
    """Write ``spec`` (any checkpoint spec: official file, our folder, a hub spec or short name) to ``out`` in our
    format with a model card. ``tokenizer``: as for ``load_generator``. Returns (kind, out)."""
    from . import hub
    from .loading import convert, load_generator, load_tokenizer, save_generator, save_tokenizer
    out = Path(out)
    if tokenizer is None:
        tokenizer = hub.companion_tokenizer(spec)
    local = hub.resolve(spec)
    if ours.is_our_checkpoint(local):
        kind = ours.read_config(local)["kind"]
        if kind == "generator":
            save_generator(load_generator(local), out)
        elif kind == "tokenizer":
            save_tokenizer(load_tokenizer(local), out)
        else:
            raise CheckpointError(f"{spec}: holds a {kind!r}; export takes tokenizers and generators")
    else:
        kind, _ = convert(local, out, tokenizer=tokenizer)
    card = model_card(out, metrics=metrics or {}, command=command, title=title,
                      source=source_note or str(spec))
    ours.atomic_write(out / CARD_NAME, lambda tmp: Path(tmp).write_text(card))
    return kind, out


def _describe(meta: dict[str, Any]) -> list[tuple[str, str]]:
    cfg = meta["config"]
    tok = cfg.get("tokenizer", cfg) if meta["kind"] == "generator" else cfg
    rows = [("kind", meta["kind"])]
    if meta["kind"] == "generator":
        rows += [("depth", str(cfg.get("depth"))), ("classes", str(cfg.get("num_classes")))]
    rows += [("image size", f"{tok.get('image_size')} px"),
             ("branches x codes", f"{tok.get('product_quant')} x {tok.get('codebook_size')}"),
             ("scales", ", ".join(map(str, tok.get("v_patch_nums", [])))),
             ("encoder / decoder", f"{tok.get('enc_type')} / {tok.get('dec_type')}")]
    return rows


def _format(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def model_card(folder: str | Path, *, metrics: dict[str, float], command: str | None, title: str | None,
               source: str) -> str:
    """The README.md of a published folder: what it holds, how to load it, its metrics, how it was made."""
    from . import __version__
    meta = ours.read_config(folder)
    kind = meta["kind"]
    title = title or f"imagefolder {kind}"
    lines = ["---", "library_name: imagefolder", "tags:", "- imagefolder", f"- image-{kind}", "---", "",
             f"# {title}", "",
             f"An ImageFolder (arXiv 2410.01756) {kind} in the `imagefolder` format: `config.json` (the "
             "configuration) and `model.safetensors` (the weights; nothing to unpickle)"
             + (", its tokenizer beside it in `tokenizer/`" if len(ours.folder_files(meta)) > 2 else "") + ".", "",
             "```python", "import imagefolder as imf",
             f'model = imf.load_{kind}("hf://{REPO_PLACEHOLDER}")', "```", "",
             "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in _describe(meta)]
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "| --- | ---: |"]
        lines += [f"| `{k}` | {_format(v)} |" for k, v in sorted(metrics.items())]
    else:
        lines.append("None recorded (pass a JSON report to `imagefolder export --metrics`).")
    lines += ["", "## How it was made", ""]
    lines += ["```", command, "```"] if command else ["Not recorded (pass `imagefolder export --command`)."]
    exported = " ".join(["imagefolder", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("imagefolder", "__main__.py") \
        else "imagefolder.publish.export"
    lines += ["", f"Exported from `{source}` with `{exported}` (imagefolder {__version__}, "
              f"{datetime.date.today().isoformat()}).", ""]
    return "\n".join(lines)


def check_publishable(folder: str | Path) -> dict[str, Any]:
    """The config of a folder ``push`` can upload: our checkpoint with its model card."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder; write one with 'imagefolder export CKPT --out {folder}'")
    meta = ours.read_config(folder)
    missing = [n for n in published_files(meta) if not (folder / n).is_file()]
    if missing:
        raise CheckpointError(f"{folder}: no {', '.join(missing)}; write the folder with 'imagefolder export'")
    return meta


def push(folder: str | Path, repo_id: str, *, private: bool | None = None, message: str | None = None,
         token: str | None = None) -> tuple[str, str]:
    """Upload an exported folder to the hub repository ``repo_id`` (created when missing). The card's load line
    names the repository. Returns (commit hash, commit URL)."""
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hub_errors
    folder = Path(folder)
    meta = check_publishable(folder)
    card = folder / CARD_NAME
    text = card.read_text()
    if REPO_PLACEHOLDER in text:
        ours.atomic_write(card, lambda tmp: Path(tmp).write_text(text.replace(REPO_PLACEHOLDER, repo_id)))
    api = HfApi(token=token, library_name="imagefolder")
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, allow_patterns=list(published_files(meta)),
                                 commit_message=message or f"imagefolder {meta['kind']}")
    except hub_errors.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        hint = "; log in with 'hf auth login' or set HF_TOKEN" if status in (401, 403) else ""
        raise CheckpointError(f"push to {repo_id}: the hub answered HTTP {status}{hint}") from None
    except (hub_errors.HFValidationError, ValueError) as e:
        raise CheckpointError(f"push to {repo_id}: {str(e).strip().splitlines()[0]}") from None
    except OSError as e:  # no network (httpx's ConnectError is not an OSError: see below)
        raise CheckpointError(f"push to {repo_id}: {e}") from None
    except Exception as e:  # noqa: BLE001 - httpx transport errors: one line, not a traceback
        if type(e).__module__.startswith(("httpx", "httpcore")):
            raise CheckpointError(f"push to {repo_id}: the hub cannot be reached ({e})") from None
        raise
    return info.oid, info.commit_url
