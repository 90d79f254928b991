"""``imagefolder push``: upload an exported folder to a Hugging Face hub repository."""
from __future__ import annotations

from . import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "push", help="upload a folder written by 'imagefolder export' to a Hugging Face hub repository",
        description="Upload config.json, model.safetensors and README.md of a folder written by 'imagefolder "
                    "export' to the hub repository --repo (created when missing), with the hub client "
                    "(HfApi.upload_folder). Log in first ('hf auth login') or set HF_TOKEN; HF_ENDPOINT names "
                    "another hub. Afterwards the model loads anywhere as hf://OWNER/NAME.",
        formatter_class=HelpFormatter)
    p.add_argument("folder", help="the folder written by 'imagefolder export'")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the hub repository to upload to")
    p.add_argument("--private", action="store_true", help="create the repository as private (when it is new)")
    p.add_argument("--message", metavar="TEXT", help="the commit message (default: 'imagefolder KIND')")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..publish import push
    oid, url = push(args.folder, args.repo, private=args.private or None, message=args.message)
    print(f"pushed {args.folder} to {args.repo} (commit {oid}): {url}")
    print(f"load it with hf://{args.repo} (this exact version: hf://{args.repo}@{oid})")
    return 0
