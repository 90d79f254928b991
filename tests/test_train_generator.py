"""Generator training: the CLI end to end, the loss (layout, label smoothing), overfitting, bit-identical resume,
num_classes from the data, EMA and weight decay of the generator's own parameters only."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import imagefolder as imf
from conftest import parse_keys
from imagefolder.cli import main
from imagefolder.data.builtin import write_builtin_images
from imagefolder.data.folder import collate_skip_bad
from imagefolder.distributed import DistInfo
from imagefolder.loading import save_tokenizer
from imagefolder.train.engine import Schedule, TrainingError
from imagefolder.train.generator_trainer import GeneratorTrainer
from imagefolder.train.options import GENERATOR_ACCEPTED_ONLY, GeneratorTrainOptions, load_options
from imagefolder.train.state import Checkpoints, load_train_state

DATA = Path(__file__).parent / "data"
BASE = dict(model_preset="tiny", depth=1, embed_dim=64, num_heads=2, drop_path_rate=0.0, global_batch_size=8,
            lr=3e-3, warmup_steps=2, num_workers=0, log_every=1, ckpt_every=1000, val_every=0, tensorboard=False,
            ema_decay=0.9, val_samples=2, sample_top_k=0)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two contended cores: one thread is much faster for these tiny shapes
    root = tmp_path_factory.mktemp("gen")
    save_tokenizer(imf.load_tokenizer(DATA / "tiny_tokenizer.pt"), root / "tok")  # codes depend on the input
    write_builtin_images(root / "data" / "train", 16, 64)
    write_builtin_images(root / "data" / "val", 10, 64, seed=1)
    write_builtin_images(root / "fixed" / "train", 8, 64)  # one batch: the overfitting set
    yield root
    torch.set_num_threads(threads)


def config(root, name, **over):
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**BASE, "tokenizer": str(root / "tok"), "data_path": str(root / "data"),
                                    **over}))
    return str(path)


def train(cfg, out, *extra) -> int:
    return main(["train-generator", "--config", cfg, "--out", str(out), "--no-progress", *map(str, extra)])


def losses(out) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


def test_cli_end_to_end_then_sample(env, tmp_path):
    out = tmp_path / "run"
    assert train(config(env, "e2e", epochs=2, val_every=2, tensorboard=True), out) == 0
    assert (out / "last" / "config.json").is_file() and (out / "best" / "config.json").is_file()
    ckpt = Checkpoints(out).latest()
    assert ckpt is not None and ckpt.name == "step-00000004.pt"
    gen = imf.load_generator(out / "last")
    assert gen.config.depth == 1 and gen.num_classes == 10 and gen.tokenizer.config == imf.load_tokenizer(
        env / "tok").config
    from imagefolder.data.folder import find_classes  # the names serve shows, in class id order
    recorded = json.loads((out / "last" / "config.json").read_text())["class_names"]
    assert recorded == find_classes(env / "data" / "train")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val"]
    assert len(val) == 2 and {"loss", "acc", "acc_s0", "acc_s3"} <= set(val[-1])
    assert all(0 <= val[-1][f"acc_s{si}"] <= 1 for si in range(4))
    assert list((out / "tb").iterdir())
    state = load_train_state(ckpt)["models"]  # the frozen tokenizer is neither saved nor averaged
    assert not [k for k in [*state["generator"], *state["ema"]["shadow"]] if k.startswith("tokenizer.")]
    assert main(["sample", "--generator", str(out / "last"), "--classes", "0,9", "--out", str(tmp_path / "s"),
                 "--top-k", "0", "--device", "cpu"]) == 0
    assert (tmp_path / "s" / "grid.png").is_file()


def test_losses_fall_when_overfitting_one_batch(env, tmp_path):
    cfg = config(env, "overfit", data_path=str(env / "fixed"), epochs=30, hflip=False, cond_drop_rate=0.0,
                 lr_scheduler="constant")
    assert train(cfg, tmp_path / "run") == 0
    seen = losses(tmp_path / "run")
    assert len(seen) == 30 and seen[-1] < 0.4 * seen[0]


def test_resume_continues_bit_identically(env, tmp_path):
    cfg = config(env, "resume", epochs=3, cond_drop_rate=0.2, p_drop=0.2, val_every=1000)  # 6 steps, flips on
    assert train(cfg, tmp_path / "straight") == 0
    assert train(cfg, tmp_path / "split", "--max-steps", 4) == 0
    assert train(cfg, tmp_path / "split", "--resume", "auto") == 0
    a = load_train_state(Checkpoints(tmp_path / "straight").latest())
    b = load_train_state(Checkpoints(tmp_path / "split").latest())
    assert a["step"] == b["step"] == 6
    for part in ("generator",):
        assert all(torch.equal(v, b["models"][part][k]) for k, v in a["models"][part].items())
    assert all(torch.equal(v, b["models"]["ema"]["shadow"][k]) for k, v in a["models"]["ema"]["shadow"].items())
    assert losses(tmp_path / "straight") == losses(tmp_path / "split")
    # a resume checkpoint is not a model: loading it says where the model is
    for load in (imf.load_generator, imf.load_tokenizer):
        with pytest.raises(imf.CheckpointError, match="training checkpoint .* step 6.*last/ or best/"):
            load(Checkpoints(tmp_path / "split").latest())


def test_options_and_model_config_are_resolved_once_and_frozen(env):
    import dataclasses
    over = {"tokenizer": str(env / "tok"), "data_path": str(env / "data"), "model_preset": "tiny", "tblr": 1e-4,
            "global_batch_size": 512, "epochs": 100}
    opts, model = load_options(GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY, None, over)
    assert opts.lr == pytest.approx(2e-4) and opts.warmup_epochs == 2.0  # derived at construction, not by check()
    opts.check()
    assert opts.lr == pytest.approx(2e-4)
    for obj, field in ((opts, "lr"), (model, "depth"), (model.tokenizer, "codebook_size")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field, 1)
    assert GeneratorTrainOptions(**dataclasses.asdict(opts)) == opts  # the logged options rebuild the same run


def test_num_classes_defaults_to_the_data(env, tmp_path):
    write_builtin_images(tmp_path / "three", 3, 64)  # classes circle, square, triangle
    over = {"tokenizer": str(env / "tok"), "data_path": str(tmp_path / "three"), "model_preset": "d16"}
    _, model = load_options(GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY, None, over)
    assert model.num_classes == 3 and model.depth == 16  # not the preset's 1000
    assert model.tokenizer == imf.load_tokenizer(env / "tok").config  # not the preset's imagefolder-4096
    _, model = load_options(GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY, None, {**over, "num_classes": 7})
    assert model.num_classes == 7
    opts, model = load_options(GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY, None,
                               {**over, "num_classes": 2, "model_preset": "tiny"})
    with pytest.raises(TrainingError, match="3 classes"):
        GeneratorTrainer(opts, model, tmp_path / "out", DistInfo(0, 1, 0, torch.device("cpu"))).train_dataset()


def test_loss_layout_and_label_smoothing(env, tmp_path):
    """The step's loss is the official one: mean over branches of the cross-entropy of logit chunk p against the
    codes of branch p over all scales, with (1 - e) * nll + e * mean(-log p) under label smoothing e."""
    for eps in (0.0, 0.3):
        opts, model = load_options(GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY, config(env, "ls"),
                                   {"label_smoothing": eps, "cond_drop_rate": 0.0, "hflip": False})
        trainer = GeneratorTrainer(opts, model, tmp_path / f"ls{eps}", DistInfo(0, 1, 0, torch.device("cpu")))
        data = trainer.train_dataset()
        torch.manual_seed(0)
        trainer.schedule = Schedule(steps_per_epoch=10, schedule_steps=10, total_steps=10, warmup_steps=0)
        trainer.build(trainer.schedule)
        batch = collate_skip_bad([data[i] for i in range(4)])
        gen, tok, V, P = trainer.gen, trainer.tok, trainer.gen.V, trainer.gen.P
        codes = tok.encode(batch.images)
        with torch.no_grad():
            logits = gen.train()(batch.labels, tok.var_input(codes))
        logp = [lg.reshape(-1, V).log_softmax(-1) for lg in logits.chunk(P, dim=-1)]
        gts = [torch.cat(codes[p], dim=1).reshape(-1) for p in range(P)]
        nll = sum(F.nll_loss(lp, gt) for lp, gt in zip(logp, gts)) / P
        uniform = sum(-lp.mean(-1).mean() for lp in logp) / P
        logs = trainer.train_step([batch])
        assert logs["loss"] == pytest.approx(float((1 - eps) * nll + eps * uniform), rel=1e-5)
        no_decay = {id(p) for g in trainer.opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
        named = dict(trainer.gen.named_parameters())
        assert id(named["blocks.0.attn.scale_mul_1H11"]) in no_decay and id(named["class_emb.weight"]) in no_decay
        assert id(named["blocks.0.attn.mat_qkv.weight"]) not in no_decay
        assert not [n for n in named if n.startswith("tokenizer.") and named[n].requires_grad]


@pytest.mark.parametrize("depth", [16, 17])
def test_full_size_recipes_build_the_released_architecture(depth):
    """The d16/d17 recipes with the released tokenizer give exactly the official VAR layout (built on meta)."""
    import imagefolder as imf
    from imagefolder.official import to_official_state_dict
    from imagefolder.train.options import GENERATOR_ACCEPTED_ONLY, GeneratorTrainOptions, load_options
    recipe = Path(__file__).parents[1] / "configs" / f"generator-d{depth}.yaml"
    opts, model = load_options(GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY, recipe, {"tokenizer": "imagefolder-4096"})
    assert model == imf.generator_preset(f"d{depth}")
    assert opts.lr == pytest.approx(8e-5 * 768 / 256)  # the VAR rule: tblr * batch / 256
    with torch.device("meta"):
        gen = imf.Generator(model)
    assert set(to_official_state_dict(gen)) == set(parse_keys(f"var_d{depth}_keys.txt"))


def test_compiled_bf16_training_saves_plain_weights_that_load(env, tmp_path):
    """The demo's recipe trains the generator compiled and under bf16 autocast: the run must save the plain
    module's fp32 weights (no torch.compile wrapper names), in a model that loads and samples."""
    out = tmp_path / "run"
    assert train(config(env, "compiled", epochs=1, val_every=2, compile=True, mixed_precision="bf16"), out) == 0
    seen = losses(out)
    assert len(seen) == 2 and all(torch.isfinite(torch.tensor(seen)))
    state = load_train_state(Checkpoints(out).latest())["models"]["generator"]
    assert state and not [k for k in state if "_orig_mod" in k]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    gen = imf.load_generator(out / "last")
    assert gen.generate([0, 9], top_k=0, seed=0).isfinite().all()
