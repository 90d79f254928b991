"""Two CPU processes under torchrun (gloo): the replicas stay identical after a few steps."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _train_helpers import make_image_folder


@pytest.mark.parametrize("encoder", ["vit", "cnn"])
def test_two_processes_keep_identical_replicas(tmp_path, encoder):
    data = make_image_folder(tmp_path / "data", per_class=8)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(Path(__file__).parent / "_ddp_worker.py"), str(data), str(out), encoder]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, differ[:5]
    assert (out / "last" / "model.safetensors").is_file()
    init = load_file(out / "rank0.safetensors")
    assert any(v.abs().sum() > 0 for k, v in init.items() if k.startswith("disc."))
