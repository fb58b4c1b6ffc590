import json
import os
import subprocess
import sys

import numpy as np
import pytest
from datafactory import write_learnable_npz

from memgate.train import checkpoint as ckpt_io
from memgate.train.rundir import read_metrics


@pytest.mark.slow
def test_two_process_gloo_ddp_run_writes_one_consistent_run(tmp_path):
    npz = write_learnable_npz(tmp_path / "toy.npz", n_train=256, n_test=64)
    cfg = tmp_path / "ddp.toml"
    out = tmp_path / "run"
    cfg.write_text(
        f'device = "cpu"\nout = "{out}"\n[model]\ndepth = 14\ngates = [3]\n[gate]\nhidden = [16]\n'
        f'[data]\npath = "{npz}"\nval_size = 32\n[train]\nepochs = 1\nbatch_size = 32\n'
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "memgate",
        "train",
        "-c",
        str(cfg),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = read_metrics(out)
    assert len(rows) == 1 and rows[0]["epoch"] == 1
    g = np.load(out / "gates.npz")
    # Both ranks' halves of every batch were gathered: every training sample has its g.
    assert g["g_b3"].shape == (1, 224) and (g["g_b3"] > 0).all()
    assert abs(float(g["g_b3"].astype(np.float64).mean()) - rows[0]["g_mean"]) < 1e-3
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
    c = ckpt_io.load(out)
    assert c["epoch"] == 1 and c["iteration"] == 7  # 224 images / global batch 32
    assert len(list((out / "tb").glob("events.*"))) == 1  # one process wrote
