"""The paper's ablation: the eight ImageNet recipes (configs/ablation) through the real option loader, the CPU-scale
rows' recipes, and ``imagefolder ablate`` end to end on two tiny rows, resumed without retraining."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from imagefolder.ablation import rows as ablation_rows
from imagefolder.ablation.rows import CPU_KEYS, PAPER_ROWS, changed_keys, cpu_tokenizer_recipe, parse_rows, tokens
from imagefolder.cli import main
from imagefolder.demo import recipes

from _train_helpers import tiny_demo_recipes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _load(path: Path) -> dict:
    """Every effective value of a config file: training options and model config, through ``load_options``."""
    from imagefolder.train.options import TOKENIZER_ACCEPTED_ONLY, TokenizerTrainOptions, load_options
    opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, path, {})
    return {**dataclasses.asdict(opts), **model.to_dict()}


def _adds(path: Path) -> set[str]:
    line = next(line for line in path.read_text().splitlines() if line.startswith("# adds:"))
    named = line.split(":", 1)[1].strip()
    return set() if named.startswith("(") else {k.strip() for k in named.split(",")}


def test_each_imagenet_row_adds_only_what_its_comment_names():
    files = [CONFIGS / "ablation" / f"row{i}.yaml" for i in range(1, 9)]
    loaded = [_load(f) for f in files]
    assert _adds(files[0]) == set()
    for i in range(1, 8):
        changed = changed_keys(loaded[i - 1], loaded[i]) - {"cloud_save_path"}
        assert changed == _adds(files[i]), f"row {i + 1}"
        assert changed == set(PAPER_ROWS[i].keys), f"row {i + 1}"
    # the paper's structure: 680 tokens over a 16x16 grid, then the released 11x11 schedule; 1 branch, then 2
    first, third, last = loaded[0], loaded[2], loaded[7]
    assert tokens(first["v_patch_nums"]) == 680 and first["num_latent_tokens"] == 256
    assert third["v_patch_nums"] == [1, 1, 2, 3, 3, 4, 5, 6, 8, 11] and third["num_latent_tokens"] == 121
    assert (first["product_quant"], loaded[3]["product_quant"]) == (1, 2)
    assert (first["codebook_drop"], first["semantic_guide"], first["disc_type"]) == (0.0, "none", "patchgan")
    # row 8 is the released recipe
    released = _load(CONFIGS / "tokenizer-4096.yaml")
    assert changed_keys(released, last) == {"cloud_save_path"}
    for i, f in enumerate(files, start=1):
        assert f"row {i} of 8" in f.read_text() and f"cloud_save_path: runs/ablation/row{i}" in f.read_text()


def test_cpu_rows_add_one_thing_each_and_row_6_is_the_demo_recipe():
    recipe = [cpu_tokenizer_recipe(r) for r in range(1, 7)]
    for r in range(2, 7):
        assert changed_keys(recipe[r - 2], recipe[r - 1]) == set(CPU_KEYS[r]), f"row {r}"
    assert recipe[5] == recipes.TOKENIZER
    assert recipe[0]["v_patch_nums"] == list(range(1, 9)) and tokens(recipe[0]["v_patch_nums"]) == 204
    assert tokens(recipe[2]["v_patch_nums"]) == 130   # fewer tokens from row 3 on, as in the paper
    with pytest.raises(ValueError, match="do not run at CPU scale"):
        cpu_tokenizer_recipe(7)


def test_budget_is_split_equally_over_the_rows_asked_for():
    from imagefolder.ablation.run import DEFAULT_BUDGET_MINUTES, ROW_SHARES, AblationSettings, _stops
    stops = _stops(AblationSettings(rows=(1, 2, 3, 4), budget_minutes=80.0), n_train=5000)
    assert stops["tokenizer"]["time_budget_minutes"] == pytest.approx(20.0 * ROW_SHARES["tokenizer"])
    assert stops["generator"]["time_budget_minutes"] == pytest.approx(20.0 * ROW_SHARES["generator"])
    default = _stops(AblationSettings(), n_train=5000)["tokenizer"]["time_budget_minutes"]
    assert default == pytest.approx(DEFAULT_BUDGET_MINUTES / 6 * ROW_SHARES["tokenizer"])
    fixed = _stops(AblationSettings(tokenizer_steps=100), n_train=5000)
    assert fixed["tokenizer"]["max_steps"] == 100 and fixed["tokenizer"]["time_budget_minutes"] is None
    assert fixed["generator"]["time_budget_minutes"] > 0


def test_parse_rows():
    assert parse_rows("1-6") == [1, 2, 3, 4, 5, 6] and parse_rows("5, 1,2") == [1, 2, 5]
    for bad in ("9", "a", "", "0-2"):
        with pytest.raises(ValueError):
            parse_rows(bad)


# test-sized recipes (tests/_train_helpers.py; a 4x4 grid: rows 1-2 scales 1,2,3,4, rows 3+ 1,2,4), one classifier
# epoch each
_TINY = tiny_demo_recipes()
TEST_RECIPES = {**_TINY, "CLASSIFIER": {**_TINY["CLASSIFIER"], "epochs": 1},
                "TEACHER": {**_TINY["TEACHER"], "epochs": 1}, "PREFIX_IMAGES": 20}
ARGS = ["ablate", "--rows", "1,6", "--tokenizer-steps", "2", "--generator-steps", "2", "--device", "cpu",
        "--no-progress"]


@pytest.fixture
def tiny(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for name, value in TEST_RECIPES.items():
        monkeypatch.setattr(recipes, name, value)
    yield
    torch.set_num_threads(threads)


def test_ablate_two_rows_end_to_end_then_resume(tiny, tmp_path, capsys):
    out = tmp_path / "ablation"
    assert main([*ARGS, "--out", str(out)]) == 0
    for name in ("ablation.md", "ablation.json", "ablation.png", "row1/result.json", "row6/result.json",
                 "row1/samples.png", "row6/reconstructions.png", "shared/classifier.json"):
        assert (out / name).is_file(), name
    table = json.loads((out / "ablation.json").read_text())
    assert [r["row"] for r in table["rows"]] == list(range(1, 9))
    by_row = {r["row"]: r for r in table["rows"]}
    assert by_row[6]["paper"] == {"tokens": 265, "rfid": 1.57, "gfid": 3.53, "probe": 40.5}
    assert by_row[2]["ours"] is None and by_row[7]["ours"] is None
    one, six = by_row[1]["ours"], by_row[6]["ours"]
    assert one["tokenizer"]["product_quant"] == 1 and one["tokenizer"]["v_patch_nums"] == [1, 2, 3, 4]
    assert one["positions"] == 30 and one["codes_per_image"] == 30
    assert six["tokenizer"]["product_quant"] == 2 and six["positions"] == 21 and six["codes_per_image"] == 42
    assert one["steps"] == {"tokenizer": 2, "generator": 2}
    for res in (one, six):
        m = res["metrics"]
        for key in ("tokenizer_val_psnr", "reconstruction_class_accuracy", "reconstruction_domain_fid",
                    "generator_val_loss", "sample_class_accuracy", "domain_fid", "probe_acc_semantic_branch"):
            assert math.isfinite(m[key]), key
    assert math.isnan(one["metrics"]["probe_acc_detail_branch"])   # one branch: no second probe
    assert math.isfinite(six["metrics"]["probe_acc_detail_branch"])
    claims = {c["claim"]: c for c in table["claims"]}
    assert list(claims) == ["the semantic branch probes higher than the detail branch (row 6)"]
    md = (out / "ablation.md").read_text()
    assert "| 6 | + semantic regularisation on one branch | 265 | 1.57 | 3.53 | 40.5 | 21 (42) | 2 / 2 |" in md
    assert "not at CPU scale" in md and "not run" in md and "## The paper's claims" in md

    # the same command again: nothing is retrained, the table is rewritten
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "ablation." not in p.name}
    capsys.readouterr()
    assert main([*ARGS, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[row 1] done earlier" in printed and "[row 6] done earlier" in printed
    assert "training" not in printed
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # an interrupted row: its finished tokenizer stage is kept, the rest of the row runs
    (out / "row1" / "result.json").unlink()
    (out / "row1" / "generator.json").unlink()
    tokenizer_stamp = (out / "row1" / "tokenizer.json").stat().st_mtime_ns
    assert main([*ARGS, "--out", str(out)]) == 0
    assert (out / "row1" / "tokenizer.json").stat().st_mtime_ns == tokenizer_stamp
    assert (out / "row1" / "result.json").is_file()


def test_one_line_errors(tiny, tmp_path, capsys):
    rc = main(["ablate", "--rows", "6-7", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "do not run at CPU scale" in err
    assert main(["ablate", "--rows", "x", "--out", str(tmp_path / "a")]) == 2
    assert "1-6 or 1,2,5" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    assert main(["ablate", "--out", str(tmp_path / "busy"), "--tokenizer-steps", "1"]) == 2
    assert "not from imagefolder ablate" in capsys.readouterr().err
    assert main(["ablate", "--tokenizer-steps", "0", "--out", str(tmp_path / "b")]) == 2
    assert "at least 1" in capsys.readouterr().err
    # a folder made with another seed is not continued
    out = tmp_path / "seeded"
    out.mkdir()
    (out / ".imagefolder-ablation").write_text("")
    (out / "settings.json").write_text(json.dumps({"scale": "cpu", "dataset": "shapes",
                                                   "data": recipes.DATASET, "seed": 1}))
    assert main(["ablate", "--out", str(out), "--rows", "1", "--device", "cpu"]) == 2
    assert "other settings (seed 1)" in capsys.readouterr().err


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["ablate", "--help"])
    text = capsys.readouterr().out
    for option in ("--scale", "--rows", "--tokenizer-steps", "--generator-steps", "--budget-minutes", "--out",
                   "--seed", "--device"):
        assert option in text
    assert re.search(r"default: 240", text)
    assert ablation_rows.NOT_AT_CPU_SCALE.startswith("rows 7 and 8")


def test_demo_tokenizer_is_row_6_plus_the_pattern_scales_and_latent_perturbation():
    demo = recipes.demo_tokenizer()
    assert demo["pattern_scales"] > 0 and cpu_tokenizer_recipe(6).get("pattern_scales", 0) == 0
    assert demo["latent_perturb"] > 0 and cpu_tokenizer_recipe(6).get("latent_perturb", 0) == 0
    assert changed_keys(cpu_tokenizer_recipe(6), demo) == set(recipes.PATTERN_SCALES) | set(recipes.LATENT_PERTURB)
