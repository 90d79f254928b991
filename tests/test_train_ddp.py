"""Two CPU processes under torchrun (gloo): the replicas stay identical after a few steps, and both the tokenizer and
the discriminator trained."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import imagefolder

from _train_helpers import make_image_folder


@pytest.mark.parametrize("encoder", ["vit", "cnn"])
def test_two_processes_keep_identical_replicas(tmp_path, encoder):
    data = make_image_folder(tmp_path / "data", per_class=8)
    out = tmp_path / "out"
    # the workers import this checkout's package (the one under test), not whichever one is installed
    paths = [str(Path(__file__).parent), str(Path(imagefolder.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(Path(__file__).parent / "_ddp_worker.py"), str(data), str(out), encoder]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, differ[:5]
    assert (out / "last" / "model.safetensors").is_file()
    # both models trained: every trainable weight of the discriminator (two steps from disc_start 1) and of the
    # tokenizer moved away from its initial value (the worker records them right after build)
    trainable = [k for k in a if k.startswith(("disc.", "tok.")) and not k.startswith("tok.semantic_model.")
                 and not k.endswith(("running_mean", "running_var", "num_batches_tracked", "ema_vocab_hit_SV"))]
    disc = [k for k in trainable if k.startswith("disc.")]
    assert disc and sum(k.startswith("tok.") for k in trainable) > 10
    unchanged = [k for k in trainable if torch.equal(a[k], a[f"init.{k}"])]
    assert not [k for k in unchanged if k.startswith("disc.")], unchanged[:5]
    assert len(unchanged) < 0.2 * len(trainable), unchanged[:5]  # a few unused phi layers stay


def test_two_processes_train_one_generator_on_a_shared_frozen_tokenizer(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=8, size=64)
    out = tmp_path / "out"
    tokenizer = Path(__file__).parent / "data" / "tiny_tokenizer.pt"
    paths = [str(Path(__file__).parent), str(Path(imagefolder.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(Path(__file__).parent / "_ddp_generator_worker.py"), str(data), str(out), str(tokenizer)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert a.keys() == b.keys() and not [k for k in a if not torch.equal(a[k], b[k])]
    own = [k for k in a if k.startswith("gen.")]
    assert own and not [k for k in own if torch.equal(a[k], a[f"init.{k}"])]  # every generator weight trained
    assert all(not torch.equal(a[f"ema.{k[4:]}"], a[k]) for k in own if a[k].is_floating_point())  # an average
    tok = imagefolder.load_tokenizer(Path(__file__).parent / "data" / "tiny_tokenizer.pt").state_dict()
    assert all(torch.equal(a[f"tok.{k}"], v) for k, v in tok.items())  # the tokenizer stayed as loaded
    saved = imagefolder.load_generator(out / "last")
    assert (out / "last" / "tokenizer" / "model.safetensors").is_file()
    assert all(torch.equal(v, a[f"ema.{k}"]) for k, v in saved.state_dict().items() if v.is_floating_point())


def test_one_process_with_an_unreadable_share_stops_every_process_with_the_reason(tmp_path):
    from imagefolder.data.folder import ImageFolderDataset
    from imagefolder.train.sampler import ResumableSampler

    data = make_image_folder(tmp_path / "data", per_class=8)
    files = [path for path, _ in ImageFolderDataset(data, 16).samples]
    share = ResumableSampler(len(files), rank=1, world_size=2, seed=0).order()  # process 1's first epoch
    for i in share:
        Path(files[i]).write_bytes(b"not a picture")
    paths = [str(Path(__file__).parent), str(Path(imagefolder.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(Path(__file__).parent / "_ddp_unreadable_worker.py"), str(data), str(tmp_path / "out")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # both processes stop with the plain reason (before, process 1 raised alone and process 0 waited for it in a
    # collective until torchrun killed it)
    assert "rank 1: " in out and "of process 1's share skipped" in out, out[-3000:]
    assert "rank 0: " in out and "in another process's share" in out, out[-3000:]


def test_gathering_batches_of_different_lengths_across_processes(tmp_path):
    # a batch that lost unreadable files is shorter in one process; the semantic loss and the pattern codebooks
    # gather over processes (before, gloo aborted on the unequal shapes)
    paths = [str(Path(__file__).parent), str(Path(imagefolder.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(Path(__file__).parent / "_ddp_gather_worker.py")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rows: process 0's three, then process 1's one; the gradient of row i is i + 1 (the product's weights; each
    # process's loss backpropagates through its own copy, so the gradients are summed over both processes)
    assert "rank 0: gathered [1.0, 1.0, 1.0, 2.0] grad [2.0, 4.0, 6.0]" in proc.stdout, proc.stdout
    assert "rank 1: gathered [1.0, 1.0, 1.0, 2.0] grad [8.0]" in proc.stdout, proc.stdout
