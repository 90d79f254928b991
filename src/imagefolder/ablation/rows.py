"""The paper's eight ablation rows: what each adds, the paper's numbers, and each row's recipe at CPU scale.

The paper has rows 1-6; the authors' README repeats them and adds rows 7-8 ("advanced training"). Each row reports
the token count, rFID, gFID (VAR-d16 on the row's tokenizer) and the linear-probe accuracy of the tokenizer's
features, on ImageNet 256. The rows' recipes with the authors' keys are ``configs/ablation/row1.yaml`` ...
``row8.yaml``.

At CPU scale (``cpu_tokenizer_recipe``) every row is the demo's conv tokenizer recipe without its pattern scales, a
demo addition the paper does not have (``demo.recipes.TOKENIZER``: 32 px, an 8x8 latent grid), with the features
of the later rows taken away, so row 6 *is* that recipe and each row differs from the previous one in what the
paper's row adds:

* row 1: one branch, no quantizer dropout, no semantic teacher, and every scale side 1, 2, ..., 8 of the grid
  (8 scales, 204 tokens: VAR's dense schedule, the most tokens this grid holds);
* row 2: + the recipe's quantizer dropout;
* row 3: + the recipe's shorter schedule 1, 2, 3, 4, 6, 8 (6 scales, 130 tokens). The paper shortens the sequence
  by a coarser latent grid (16x16 -> 11x11); here the grid stays the demo's 8x8 and the scales thin out, so the
  claim tested is the token budget, not the grid;
* row 4: + a second branch (product quantization; the generator predicts both codes of a position at once);
* row 5: + the teacher's semantic regularisation, of all branches (``half_sem`` false);
* row 6: + of the last branch only (``half_sem`` true): the demo recipe without pattern scales.

Rows 7 and 8 do not run at CPU scale: the stronger discriminator is heads on a *pretrained* DINOv2-S, which needs a
download, and a randomly initialised ViT is not a stronger discriminator; row 8 builds on row 7.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..demo import recipes


@dataclass(frozen=True)
class PaperRow:
    id: int
    method: str                  # what the row adds, as the paper says it
    keys: tuple[str, ...]        # the config keys the row changes (configs/ablation/rowN.yaml, "adds:")
    tokens: int                  # the paper's "length" column
    rfid: float
    gfid: float
    probe: float | None          # linear-probe top-1 accuracy in % (None: not reported)
    cpu: bool                    # runs at CPU scale


PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow(1, "multi-scale residual quantization (VAR)", (), 680, 1.92, 7.52, None, True),
    PaperRow(2, "+ quantizer dropout", ("codebook_drop",), 680, 1.71, 6.03, None, True),
    PaperRow(3, "+ smaller patch size, K = 11", ("num_latent_tokens", "v_patch_nums"), 265, 3.24, 6.56, None, True),
    PaperRow(4, "+ product quantization & parallel decoding", ("product_quant",), 265, 2.06, 5.96, None, True),
    PaperRow(5, "+ semantic regularisation on all branches", ("semantic_guide",), 265, 1.97, 5.21, None, True),
    PaperRow(6, "+ semantic regularisation on one branch", ("half_sem",), 265, 1.57, 3.53, 40.5, True),
    PaperRow(7, "+ stronger discriminator", ("disc_type",), 265, 1.04, 2.94, 50.2, False),
    PaperRow(8, "+ equilibrium enhancement", ("lecam_loss_weight", "disc_adaptive_weight"), 265, 0.80, 2.60, 58.0,
             False),
)
ROWS_BY_ID = {r.id: r for r in PAPER_ROWS}
CPU_ROWS = tuple(r.id for r in PAPER_ROWS if r.cpu)
NOT_AT_CPU_SCALE = ("rows 7 and 8 do not run at CPU scale: row 7's stronger discriminator is trainable heads on a "
                    "pretrained DINOv2-S (a download; with random weights it is not a stronger discriminator) and "
                    "row 8 builds on row 7. Their ImageNet recipes are configs/ablation/row7.yaml and row8.yaml")


def dense_scales(side: int) -> list[int]:
    """Every scale side 1, 2, ..., ``side``: VAR's dense schedule on a ``side`` x ``side`` grid."""
    return list(range(1, side + 1))


def cpu_tokenizer_recipe(row: int) -> dict[str, Any]:
    """The tokenizer recipe of ``row`` (1-6) at CPU scale: ``recipes.TOKENIZER`` (read now, so a test's small
    recipe carries over) without what the later rows add. Keys as in ``demo.recipes.TOKENIZER``."""
    if row not in CPU_ROWS:
        raise ValueError(f"row {row}: {NOT_AT_CPU_SCALE}")
    full = recipes.TOKENIZER
    recipe = dict(full)
    if row < 6:
        recipe["half_sem"] = False
    if row < 5:
        recipe["semantic_guide"] = "none"
    if row < 4:
        recipe["product_quant"] = 1
    if row < 3:
        recipe["v_patch_nums"] = dense_scales(full["v_patch_nums"][-1])
    if row < 2:
        recipe["codebook_drop"] = 0.0
    return recipe


def cpu_generator_recipe(row: int) -> dict[str, Any]:
    """The generator recipe of every row at CPU scale (``recipes.SMALL_GENERATOR``)."""
    if row not in CPU_ROWS:
        raise ValueError(f"row {row}: {NOT_AT_CPU_SCALE}")
    return dict(recipes.SMALL_GENERATOR)


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """Keys whose values differ between two recipes (a key missing on one side counts as changed)."""
    return {k for k in before.keys() | after.keys() if before.get(k, None) != after.get(k, None)}


# the keys each CPU row changes against the one before (the paper's keys, but row 3 changes only the scales)
CPU_KEYS: dict[int, tuple[str, ...]] = {1: (), 2: ("codebook_drop",), 3: ("v_patch_nums",), 4: ("product_quant",),
                                        5: ("semantic_guide",), 6: ("half_sem",)}


def tokens(v_patch_nums: list[int] | tuple[int, ...]) -> int:
    """Positions over all scales (each holds one code per branch: the generator's sequence length)."""
    return sum(p * p for p in v_patch_nums)


def parse_rows(text: str) -> list[int]:
    """``"1-6"``, ``"1,2,5"`` or ``"3"`` -> sorted row ids; ValueError for anything else or an unknown row."""
    ids: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                ids.update(range(lo, hi + 1))
            else:
                ids.add(int(part))
        except ValueError:
            raise ValueError(f"--rows {text!r}: write rows as 1-6 or 1,2,5") from None
    unknown = sorted(i for i in ids if i not in ROWS_BY_ID)
    if not ids or unknown:
        raise ValueError(f"--rows {text!r}: the paper's rows are 1 to 8" + (f", not {unknown}" if unknown else ""))
    return sorted(ids)
