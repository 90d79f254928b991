"""Fresh pictures every epoch: epoch 0 is the make-dataset folder itself, later epochs are new pictures of the same
stream, labels follow the folder's order, and the trainers use them (the generator without a codes cache)."""
from __future__ import annotations

import pytest
import torch

from imagefolder.config import ConfigError
from imagefolder.data.folder import ImageFolderDataset
from imagefolder.data.fresh import FreshPictures, FreshPicturesError
from imagefolder.data.make_dataset import make_dataset


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("fresh") / "shapes"
    make_dataset("shapes", root, size=16, train_per_class=2, val_per_class=1, seed=3)
    return root


def test_epoch_zero_is_the_folder_and_later_epochs_are_new(folder):
    fresh = FreshPictures(folder / "train", 16)
    files = ImageFolderDataset(folder / "train", 16)
    assert fresh.classes == files.classes and len(fresh) == len(files) == 20
    by_name = {(label, path.name): i for i, (path, label) in enumerate(files.samples)}
    for i in range(len(fresh)):
        x, label, index = fresh[i]
        j = by_name[(label, f"{i:05d}.png")]  # picture i of the stream is file NNNNN.png of its class
        assert index == i and torch.equal(x, files[j][0])
    fresh.set_epoch(1)
    x1, label1, _ = fresh[0]
    assert label1 == fresh[0][1] == FreshPictures(folder / "train", 16)[0][1]  # labels keep cycling the classes
    assert not torch.equal(x1, FreshPictures(folder / "train", 16)[0][0])
    again = FreshPictures(folder, 16)  # the dataset folder or its train/ both work
    again.set_epoch(1)
    assert torch.equal(again[0][0], x1)


def test_flips_follow_the_seed_and_epoch(folder):
    a, b = FreshPictures(folder, 16, flip=True, seed=0), FreshPictures(folder, 16, flip=False)
    flipped = [i for i in range(len(a)) if not torch.equal(a[i][0], b[i][0])]
    assert flipped and all(torch.equal(a[i][0], b[i][0].flip(-1)) for i in flipped)


def test_a_plain_folder_is_refused(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(FreshPicturesError, match="make-dataset"):
        FreshPictures(tmp_path / "train", 16)


def test_trainers_draw_fresh_pictures(folder, tmp_path):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from _train_helpers import TINY_TOKENIZER

    from imagefolder.distributed import DistInfo
    from imagefolder.train.generator_trainer import GeneratorTrainer
    from imagefolder.train.options import (GENERATOR_ACCEPTED_ONLY, TOKENIZER_ACCEPTED_ONLY, GeneratorTrainOptions,
                                           TokenizerTrainOptions, load_options)
    from imagefolder.train.tokenizer_trainer import TokenizerTrainer
    cpu = DistInfo(0, 1, 0, torch.device("cpu"))
    opts, model = load_options(TokenizerTrainOptions, TOKENIZER_ACCEPTED_ONLY, None, {
        **TINY_TOKENIZER, "data_path": str(folder), "fresh_pictures": True, "max_steps": 12})
    t = TokenizerTrainer(opts, model, tmp_path / "tok", cpu, show_progress=False)
    assert t.fit()["steps"] == 12 and isinstance(t.train_set, FreshPictures) and t.epoch >= 2  # 5 steps an epoch
    gen = {"model_preset": "tiny", "depth": 1, "embed_dim": 32, "num_heads": 2, "global_batch_size": 4,
           "num_workers": 0, "val_every": 0, "tensorboard": False, "val_samples": 0, "data_path": str(folder),
           "tokenizer": str(tmp_path / "tok" / "last"), "fresh_pictures": True, "max_steps": 3}
    opts, model = load_options(GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY, None, gen)
    assert GeneratorTrainer(opts, model, tmp_path / "gen", cpu, show_progress=False).fit()["steps"] == 3
    with pytest.raises(ConfigError, match="fresh_pictures draws new pictures"):
        load_options(GeneratorTrainOptions, GENERATOR_ACCEPTED_ONLY, None, {**gen, "codes_cache": "codes.safetensors"})
