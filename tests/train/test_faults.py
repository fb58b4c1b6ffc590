"""kill -9 at every phase boundary of the last epoch, then resume: the run equals an uninterrupted
one; two trainings started into one folder: one refuses, the other's results stay intact."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from runfactory import TIMING_KEYS, tiny

from memgate.train.rundir import read_metrics

# Runs `memgate train -c CONFIG` with one function replaced by SIGKILL when the last epoch reaches it.
KILLER = """
import os, signal, sys
import memgate.train.loop as loop
import memgate.train.rundir as rundir
point, epochs, config = sys.argv[1], int(sys.argv[2]), sys.argv[3]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if point == "after_checkpoint":  # the checkpoint of the last epoch is written, metrics.jsonl is not
    real = rundir.write_metrics
    rundir.write_metrics = lambda run, rows: die() if len(rows) == epochs else real(run, rows)
elif point == "after_metrics":  # metrics.jsonl is written, gates.npz is not
    real_g = rundir.write_gates
    rundir.write_gates = lambda run, a: die() if a["g_b3"].shape[0] == epochs else real_g(run, a)
elif point == "after_gates":  # every per-epoch file is written, the summary is not
    loop.plot_g_histograms = die
elif point == "mid_epoch":  # a few batches into the last epoch, after a mid-epoch checkpoint
    real_step, calls = loop.train_step, [0]
    def step(*a, **k):
        calls[0] += 1
        if calls[0] == 14 * (epochs - 1) + 5:
            die()
        return real_step(*a, **k)
    loop.train_step = step
from memgate.cli import main
sys.exit(main(["train", "-c", config]))
"""

SUMMARY_VOLATILE = ("train_time_s", "out")


def _train(config, *extra):
    return subprocess.run([sys.executable, "-m", "memgate", "train", "-c", str(config), *extra], capture_output=True)


def _outputs(run):
    metrics = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(run)]
    with np.load(run / "gates.npz") as z:
        gates = {k: z[k] for k in z.files}
    with np.load(run / "signals.npz") as z:
        gates.update({f"signals/{k}": z[k] for k in z.files})
    summary = json.loads((run / "summary.json").read_text())
    return metrics, gates, {k: v for k, v in summary.items() if k not in SUMMARY_VOLATILE}


@pytest.fixture(scope="module")
def reference(npz, tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    cfg = tiny(npz, root / "run", "train.epochs=3", "data.label_noise=0.2")
    (root / "c.toml").write_text(cfg.to_toml())
    assert _train(root / "c.toml").returncode == 0
    return _outputs(root / "run")


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_checkpoint", "after_metrics", "after_gates", "mid_epoch"])
def test_kill_9_in_the_last_epoch_then_resume_equals_uninterrupted(npz, tmp_path, reference, point):
    run = tmp_path / "run"
    extra = ["train.checkpoint_every_s=0.001"] if point == "mid_epoch" else []
    cfg = tiny(npz, run, "train.epochs=3", "data.label_noise=0.2", *extra)
    (tmp_path / "c.toml").write_text(cfg.to_toml())
    killed = subprocess.run([sys.executable, "-c", KILLER, point, "3", str(tmp_path / "c.toml")], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-500:]
    assert not (run / "summary.json").exists()
    assert (run / ".lock").exists()  # a dead process's lock: the next command takes it over
    resumed = _train(tmp_path / "c.toml")
    assert resumed.returncode == 0, resumed.stderr.decode()[-500:]
    metrics, gates, summary = _outputs(run)
    ref_metrics, ref_gates, ref_summary = reference
    assert metrics == ref_metrics
    assert summary == ref_summary
    assert set(gates) == set(ref_gates)
    for k in gates:
        assert np.array_equal(gates[k], ref_gates[k]), k


@pytest.mark.slow
def test_two_trainings_into_one_folder_one_refuses_the_other_finishes(npz, tmp_path):
    run = tmp_path / "run"
    (tmp_path / "a.toml").write_text(tiny(npz, run, "train.epochs=10").to_toml())
    (tmp_path / "b.toml").write_text(tiny(npz, run, "train.epochs=10", "train.lr=0.05").to_toml())
    first = subprocess.Popen([sys.executable, "-m", "memgate", "train", "-c", str(tmp_path / "a.toml")])
    deadline = time.time() + 60
    while not (run / "config.toml").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = _train(tmp_path / "b.toml")
    assert first.wait(timeout=300) == 0
    assert second.returncode == 2
    err = second.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "in use by memgate process" in err, err
    assert "lr = 0.1\n" in (run / "config.toml").read_text()
    assert json.loads((run / "summary.json").read_text())["epochs"] == 10
    assert _train(tmp_path / "b.toml").returncode == 2  # later on: a run of another config, refused
