import json
import os
import subprocess
import sys

import numpy as np
import pytest
from datafactory import write_learnable_npz

from memgate.train import checkpoint as ckpt_io
from memgate.train.rundir import read_metrics


def _ddp_config(tmp_path, model: str, epochs: int):
    """A CPU config for a two-rank run on toy data (``model``: the [model] and [gate] lines)."""
    npz = write_learnable_npz(tmp_path / "toy.npz", n_train=256, n_test=64)
    cfg, out = tmp_path / "ddp.toml", tmp_path / "run"
    cfg.write_text(
        f'device = "cpu"\nout = "{out}"\n[model]\n{model}\n'
        f'[data]\npath = "{npz}"\nval_size = 32\n[train]\nepochs = {epochs}\nbatch_size = 32\n'
    )
    return cfg, out


@pytest.mark.slow
def test_two_process_gloo_ddp_run_writes_one_consistent_run(tmp_path):
    cfg, out = _ddp_config(tmp_path, "depth = 14\ngates = [3]\n[gate]\nhidden = [16]", epochs=1)
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


def test_a_gpu_rank_binds_its_process_group_to_its_device(monkeypatch):
    """Faked torchrun on a GPU node: NCCL with device_id (no guessing, no warning); gloo on CPUs."""
    import torch

    from memgate.train import distributed as d

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(d.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(d.dist, "init_process_group", lambda backend, **kw: calls.append((backend, kw)))
    monkeypatch.setattr(d.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(d.dist, "get_world_size", lambda: 2)
    assert d.init_distributed(torch.device("cuda", 1)) == d.Dist(1, 2)
    assert d.init_distributed(torch.device("cpu")) == d.Dist(1, 2)
    assert calls == [("nccl", {"device_id": torch.device("cuda", 1)}), ("gloo", {})]


def test_bn_statistics_are_averaged_over_ranks(monkeypatch):
    """Faked second rank: float buffers become the mean of both ranks', integer ones rank 0's."""
    import torch

    from memgate.train import distributed as d

    bn = torch.nn.BatchNorm2d(3)
    bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
    bn.running_var.copy_(torch.tensor([1.0, 1.0, 1.0]))
    bn.num_batches_tracked.fill_(7)
    other = {"running_mean": torch.tensor([3.0, 2.0, 1.0]), "running_var": torch.tensor([3.0, 5.0, 1.0])}
    by_id = {id(getattr(bn, k)): v for k, v in other.items()}
    broadcast = []
    monkeypatch.setattr(d.dist, "all_reduce", lambda t: t.add_(by_id[id(t)]))
    monkeypatch.setattr(d.dist, "broadcast", lambda t, src: broadcast.append((t.dtype, src)))
    d.average_buffers(bn, d.Dist(0, 2))
    assert bn.running_mean.tolist() == [2.0, 2.0, 2.0] and bn.running_var.tolist() == [2.0, 3.0, 1.0]
    assert broadcast == [(torch.int64, 0)] and bn.num_batches_tracked.item() == 7


@pytest.mark.slow
def test_a_failure_on_rank_0_ends_every_rank_with_its_error(tmp_path):
    """Rank 0 cannot write its checkpoint (faked full disk) at the first epoch end: both ranks exit
    with that one-line error at once, none waits in an all-reduce for a timeout."""
    import time

    cfg, out = _ddp_config(tmp_path, "depth = 8\ngates = []\n[gate]\nhidden = []", epochs=3)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '0':\n"
        "    from memgate.errors import StorageError\n"
        "    from memgate.train import checkpoint\n"
        "    def full(obj, path):\n"
        "        raise StorageError(f'storage: cannot write {path} (No space left on device); free disk space')\n"
        "    checkpoint.save = full\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{site}:{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    t = time.perf_counter()
    res = subprocess.run(
        [*cmd, "-m", "memgate", "train", "-c", str(cfg)], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode != 0
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("memgate: error: storage: cannot write")]
    assert len(errors) == 2, res.stderr[-3000:]  # rank 0's own error, and rank 1 stopped with the same one
    assert time.perf_counter() - t < 200
