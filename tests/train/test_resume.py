import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from runfactory import _strip, _weights, tiny

import memgate.train.loop as training
from memgate.train import checkpoint as ckpt_io
from memgate.train.run import train as run_training
from memgate.train.rundir import read_metrics


def test_resume_mid_epoch_after_ctrl_c_is_bit_identical(npz, tmp_path, monkeypatch):
    ref = tiny(npz, tmp_path / "ref")
    run_training(ref)

    calls = {"n": 0}
    real_step = training.train_step

    def interrupting_step(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 20:  # epoch 2, batch 6 of 14: Ctrl-C arrives mid-epoch
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*a, **kw)

    monkeypatch.setattr(training, "train_step", interrupting_step)
    cfg = tiny(npz, tmp_path / "resumed")
    with pytest.raises(training.Interrupted, match="run the same command to resume"):
        run_training(cfg)
    c = ckpt_io.load(tmp_path / "resumed")
    assert (c["epoch"], c["batch"]) == (1, 6)
    assert not (tmp_path / "resumed" / "summary.json").exists()
    monkeypatch.setattr(training, "train_step", real_step)
    run_training(cfg)

    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _strip(read_metrics(tmp_path / "ref")) == _strip(read_metrics(tmp_path / "resumed"))
    ga, gb = np.load(tmp_path / "ref" / "gates.npz"), np.load(tmp_path / "resumed" / "gates.npz")
    assert np.array_equal(ga["g_b3"], gb["g_b3"])


def test_snapshots_keep_the_weights_every_n_epochs_and_survive_a_resume(npz, tmp_path, monkeypatch):
    from memgate.train.rundir import snapshot_epochs, snapshot_path

    ref = tiny(npz, tmp_path / "ref", "train.epochs=3", "train.snapshot_every=1")
    run_training(ref)
    assert snapshot_epochs(tmp_path / "ref") == [1, 2, 3]
    last = ckpt_io.load(snapshot_path(tmp_path / "ref", 3))
    assert last["epoch"] == 3 and last["config"] == ckpt_io.load(tmp_path / "ref")["config"]
    final = _weights(tmp_path / "ref")
    assert all(torch.equal(last["model"][k], final[k]) for k in final)
    first = ckpt_io.load(snapshot_path(tmp_path / "ref", 1))["model"]
    assert not all(torch.equal(first[k], final[k]) for k in final)

    # A run without snapshots, stopped in epoch 2, resumed with them on (the key changes no result):
    # epochs 2 and 3 are kept, bit-identical to the uninterrupted run's.
    calls = {"n": 0}
    real_step = training.train_step

    def interrupting_step(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 20:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*a, **kw)

    monkeypatch.setattr(training, "train_step", interrupting_step)
    with pytest.raises(training.Interrupted):
        run_training(tiny(npz, tmp_path / "late", "train.epochs=3"))
    monkeypatch.setattr(training, "train_step", real_step)
    run_training(tiny(npz, tmp_path / "late", "train.epochs=3", "train.snapshot_every=1"))
    assert snapshot_epochs(tmp_path / "late") == [2, 3]
    for e in (2, 3):
        a = ckpt_io.load(snapshot_path(tmp_path / "ref", e))["model"]
        b = ckpt_io.load(snapshot_path(tmp_path / "late", e))["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_matches_uninterrupted(npz, tmp_path):
    def cmd(out):
        cfg = tiny(npz, out, "train.epochs=5", "train.checkpoint_every_s=0.2")
        path = tmp_path / f"{Path(out).name}.toml"
        path.write_text(cfg.to_toml())
        return [sys.executable, "-m", "memgate", "train", "-c", str(path)]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd(tmp_path / "ref"), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(cmd(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        time.sleep(0.05)
    time.sleep(0.6)  # into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "summary.json").exists()
    c = ckpt_io.load(tmp_path / "killed")
    print("killed at", c["epoch"], c["batch"])
    assert (c["epoch"], c["batch"]) < (5, 0)
    subprocess.run(cmd(tmp_path / "killed"), check=True, env=env, capture_output=True)
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _strip(read_metrics(tmp_path / "ref")) == _strip(read_metrics(tmp_path / "killed"))
