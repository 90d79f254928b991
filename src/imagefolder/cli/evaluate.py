"""``imagefolder evaluate``: FID / IS / precision-recall / class accuracy of samples; PSNR / SSIM / rFID of
reconstructions.

SAMPLES and REF are image folders (searched recursively) or .npz files with arr_0 = uint8 (N, H, W, 3), the ADM
evaluator's layout. REF may also be a statistics file: one written by --save-ref-stats, or an ADM reference batch
(its precomputed Inception mu / sigma are then used for FID, its arr_0 images, when present, for the rest).

Feature spaces:

* Inception (unless --no-inception): torch-fidelity's port of the TF FID Inception-v3 ("inception-v3-compat":
  2048-d pool features, IS from its 1008 logits). Weights come from torch-fidelity's download or
  --inception-weights PATH.
* Domain (with --classifier DIR, made by 'imagefolder train-classifier'): FID and precision/recall on the
  classifier's penultimate features, IS from its softmax, and the class accuracy of the samples (does
  conditioning work?). Labels come from file names *_classNNNN.png (written by 'imagefolder sample'), from class
  sub-folder names (ImageFolder layout, matched to the classifier's class names) or from an npz labels array.

With --recon-of ORIGINALS, SAMPLES are reconstructions: each is paired with the original of the same relative
path (suffix ignored; folders) or the same index (npz), PSNR / SSIM are averaged over pairs, and FID against the
originals is the rFID.

Prints a table; --out writes every number to JSON, with the feature space of each FID and the image counts.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import atomic_write
from ..data.images import ImageError
from ..metrics.evaluation import Extracted, extract, space_metrics
from ..metrics.fid import FeatureStats, StatsFileError, is_stats_file, load_stats, save_stats
from ..metrics.imagesets import ImageSet, npz_keys, open_images, pair_by_name
from ..metrics.inception import InceptionUnavailable
from . import HelpFormatter, UsageError
from ._outputs import add_overwrite_option, check_output


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="FID / IS / precision-recall / class accuracy; PSNR / SSIM / rFID",
                       description=__doc__.replace("``", ""), formatter_class=HelpFormatter)
    p.add_argument("samples", metavar="SAMPLES", help="folder or .npz (arr_0: uint8 NHWC) of generated images or, "
                                                      "with --recon-of, reconstructions")
    p.add_argument("--ref", metavar="REF",
                   help="reference images (folder or .npz) or statistics (.npz from --save-ref-stats, or an ADM "
                        "reference batch with mu / sigma); without it FID and precision/recall are skipped")
    p.add_argument("--recon-of", metavar="ORIGINALS",
                   help="SAMPLES are reconstructions of these images (folder or .npz): adds PSNR / SSIM, and FID "
                        "against them is the rFID (not with --ref)")
    p.add_argument("--classifier", metavar="DIR",
                   help="domain classifier (imagefolder train-classifier) for domain FID / IS / precision-recall / "
                        "class accuracy; also a folder on the Hugging Face hub: hf://OWNER/REPO[/FOLDER]")
    p.add_argument("--inception", action=argparse.BooleanOptionalAction, default=True,
                   help="Inception-v3 metrics (FID, IS, precision/recall)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="local Inception weights (torch-fidelity's weights-inception-2015-12-05-6726825d.pth); "
                        "unset: torch-fidelity downloads them once into the torch hub cache")
    p.add_argument("--save-ref-stats", metavar="F.npz",
                   help="write the reference set's feature statistics (every feature space computed) to this "
                        "file, for later use as --ref")
    p.add_argument("--image-size", type=int, metavar="N",
                   help="center-crop (ADM crop) images read from folders to N x N; needed when a folder's "
                        "images differ in size (with --recon-of the originals are cropped to the "
                        "reconstructions' size by default)")
    p.add_argument("--out", metavar="FILE", help="write all numbers to this JSON file")
    add_overwrite_option(p, "an existing --out or --save-ref-stats file")
    p.add_argument("--batch-size", type=int, default=50, metavar="N", help="images per forward pass")
    p.add_argument("--workers", type=int, default=4, metavar="N", help="threads decoding image files")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda when available, else the CPU")
    p.set_defaults(run=run)


def run(args) -> int:
    try:
        return _run(args)
    except (ImageError, StatsFileError, InceptionUnavailable) as e:
        raise UsageError(str(e)) from None


def _check(args) -> None:
    for name, low in (("batch_size", 1), ("workers", 1), ("image_size", 8)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if args.recon_of and args.ref:
        raise UsageError("--recon-of compares with the originals; drop --ref")
    if not (args.inception or args.classifier or args.recon_of):
        raise UsageError("nothing to evaluate: --no-inception without --classifier or --recon-of")
    if args.save_ref_stats and not (args.ref or args.recon_of):
        raise UsageError("--save-ref-stats needs reference images (--ref or --recon-of)")
    if args.inception_weights and not Path(args.inception_weights).is_file():
        raise FileNotFoundError(f"--inception-weights {args.inception_weights}: no such file")
    for option, path in (("--out", args.out), ("--save-ref-stats", args.save_ref_stats)):
        if path:
            check_output(path, args.overwrite, option=option)


def _device(choice: str):
    from ..distributed import pick_device
    try:
        return pick_device(choice)
    except RuntimeError as e:
        raise UsageError(f"--device {choice}: {e}") from None


def _extractors(args, device, notes: list[str]) -> list:
    from ..metrics.extractors import DomainExtractor
    from ..metrics.inception import InceptionExtractor
    out = []
    if args.inception:
        try:
            out.append(InceptionExtractor(args.inception_weights, device))
        except InceptionUnavailable as e:
            if not (args.classifier or args.recon_of):
                raise
            notes.append(f"Inception metrics skipped: {e}")
            print(f"imagefolder evaluate: warning: {e}; computing the other metrics", file=sys.stderr)
    if args.classifier:
        out.append(DomainExtractor(args.classifier, device))
    return out


def _reference(args, samples: ImageSet) -> tuple[ImageSet | None, list[FeatureStats], str | None, str | None]:
    """Reference images, precomputed statistics, the kind of reference ("images", "statistics", ...) and, with
    --recon-of, how the originals were paired with the reconstructions."""
    if args.recon_of:
        size = args.image_size
        if size is None:  # crop the originals to the reconstructions' size, as 'imagefolder reconstruct' does
            h, w = samples.image_shape
            size = h if h == w else None
        originals, paired_by = pair_by_name(samples, open_images(args.recon_of, size=size))
        return originals, [], "originals", paired_by
    if not args.ref:
        return None, [], None, None
    ref = Path(args.ref)
    if ref.is_file():
        keys = npz_keys(ref)
        if is_stats_file(keys):
            stats = load_stats(ref)
            if "arr_0" in keys:
                return open_images(ref), stats, "images + statistics (ADM reference batch)", None
            return None, stats, "statistics", None
    return open_images(ref, size=args.image_size), [], "images", None


def _domain_labels(samples: ImageSet, class_names: list[str], notes: list[str]) -> np.ndarray | None:
    """The samples' labels as indices into the classifier's classes, or None (with a note) when there are none."""
    if samples.labels is None:
        notes.append("class accuracy skipped: the samples have no labels (file names *_classNNNN, class folders "
                     "or an npz labels array)")
        return None
    if samples.label_names is not None:
        unknown = [n for n in samples.label_names if n not in class_names]
        if unknown:
            notes.append(f"class accuracy skipped: class folders {unknown[:5]} are not classes of the classifier")
            return None
        index = {n: i for i, n in enumerate(class_names)}
        return np.array([index[samples.label_names[i]] for i in samples.labels], dtype=np.int64)
    if samples.labels.min() < 0 or samples.labels.max() >= len(class_names):
        notes.append(f"class accuracy skipped: labels outside 0..{len(class_names) - 1} (the classifier's classes)")
        return None
    return samples.labels


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v


def _run(args) -> int:
    from ..metrics.extractors import DomainExtractor

    _check(args)
    device = _device(args.device)
    notes: list[str] = []
    extractors = _extractors(args, device, notes)
    samples = open_images(args.samples, size=args.image_size)
    ref_images, ref_stats, ref_kind, paired_by = _reference(args, samples)
    recon = args.recon_of is not None
    res: Extracted = extract(samples, extractors, args.batch_size, args.workers,
                             originals=ref_images if recon else None, desc="samples")
    ref_feats = res.originals
    if not recon and ref_images is not None and extractors:
        ref_feats = extract(ref_images, extractors, args.batch_size, args.workers, desc="reference").samples

    computed = [FeatureStats.from_features(f.feat_ND, ex.feature_space, ex.weights_sha256)
                for f, ex in zip(ref_feats, extractors)] if ref_feats and len(ref_images) >= 2 else []
    report: dict[str, Any] = {
        "mode": "reconstruction" if recon else "generation",
        "samples": {"source": samples.source, "count": len(samples), "labels_from": samples.label_source},
    }
    if samples.ignored:
        report["samples"]["ignored_files"] = samples.ignored
    if ref_kind is not None:
        counts = [s.n for s in ref_stats if s.n is not None]
        report["reference"] = {"source": args.recon_of or args.ref, "kind": ref_kind,
                               "count": len(ref_images) if ref_images is not None else (counts[0] if counts else None)}
    for i, ex in enumerate(extractors):
        precomputed = next((s for s in ref_stats if s.same_space(ex.feature_space, ex.weights_sha256)), None)
        stats = precomputed or (computed[i] if computed else None)
        if ref_kind == "statistics" and stats is None:
            notes.append(f"{ex.feature_space}: FID skipped: {args.ref} has no statistics for this feature space")
        elif ref_images is not None and stats is None:
            notes.append(f"{ex.feature_space}: FID skipped: it needs at least 2 reference images")
        is_domain = isinstance(ex, DomainExtractor)
        labels = _domain_labels(samples, ex.class_names, notes) if is_domain and not recon else None
        block = space_metrics(res.samples[i], ex, stats, ref_feats[i] if ref_feats else None, labels, notes)
        if stats is not None:
            block["ref_stats"] = "precomputed" if precomputed is not None else "computed"
        if is_domain:
            block["classifier"] = str(args.classifier)
        else:
            block["weights"] = ex.source
        report["domain" if is_domain else "inception"] = block
    if recon:
        report["reconstruction"] = _pair_summary(res, paired_by)
    if args.save_ref_stats:
        if computed:
            save_stats(args.save_ref_stats, computed)
            report["saved_ref_stats"] = str(args.save_ref_stats)
        else:
            notes.append("--save-ref-stats: no reference features were computed (no feature space, or fewer than "
                         "2 reference images); nothing written")
    if ref_kind == "statistics" and extractors:
        notes.append("precision/recall skipped: they need reference images, and REF holds statistics only")
    report["notes"] = notes
    report = _finite(report)
    if args.out:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n"))
    _print_table(report)
    return 0


def _pair_summary(res: Extracted, paired_by: str) -> dict[str, Any]:
    q = res.quality
    return {"pairs": len(q), "paired_by": paired_by, "psnr": q.psnr, "ssim": q.ssim,
            "identical_pairs": q.identical_pairs,
            "metrics": "on 8-bit RGB in [0, 1]: PSNR in dB (infinite, reported as null, when a pair is identical); "
                       "SSIM with an 11x11 Gaussian window (sigma 1.5)"}


def _print_table(report: dict[str, Any]) -> None:
    s, ref = report["samples"], report.get("reference")
    head = f"{s['count']} {'reconstructions' if report['mode'] == 'reconstruction' else 'samples'} ({s['source']}"
    head += f", labels from {s['labels_from']})" if s["labels_from"] else ")"
    if ref:
        head += f" vs {ref['count'] if ref['count'] is not None else '?'} reference ({ref['source']}, {ref['kind']})"
    rows = []
    fid_name = "rFID" if report["mode"] == "reconstruction" else "FID"
    for key in ("inception", "domain"):
        block = report.get(key)
        if block is None:
            continue
        space = block["fid_features"]
        for name, label in ((fid_name, "fid"), ("precision", "precision"), ("recall", "recall")):
            if label in block:
                rows.append((name, _fmt(block[label]), space))
        rows.append(("IS", f"{_fmt(block['is_mean'])} ± {_fmt(block['is_std'])}", space))
        if "class_accuracy" in block:
            rows.append(("class accuracy", f"{100 * block['class_accuracy']:.2f}%", space))
    if "reconstruction" in report:
        r = report["reconstruction"]
        rows.append(("PSNR (dB)", _fmt(r["psnr"]), f"{r['pairs']} pairs by {r['paired_by']}"))
        rows.append(("SSIM", _fmt(r["ssim"]), f"{r['pairs']} pairs by {r['paired_by']}"))
    print(head)
    width = max((len(v) for _, v, _ in rows), default=5)
    for name, value, space in rows:
        print(f"  {name:<16} {value:>{width}}  {space}")
    for note in report["notes"]:
        print(f"  note: {note}")
    if "saved_ref_stats" in report:
        print(f"  reference statistics written to {report['saved_ref_stats']}")


def _fmt(v: float | None) -> str:
    return "inf" if v is None else f"{v:.4f}"
