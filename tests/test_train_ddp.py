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
