"""kill -9 at every phase boundary of the last epoch, then resume: the run equals an uninterrupted
one; two trainings started into one folder: one refuses, the other's results stay intact."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from runfactory import TIMING_KEYS, tiny

from memgate.train.rundir import read_gates, read_metrics

# Runs `memgate train -c CONFIG` with one function replaced by SIGKILL when the last epoch reaches it
# ("none": no kill). bf16 is forced on (the CPU's detection mocked) so that a bf16 run is tested on
# any machine; runs with train.amp=false are fp32 whatever the CPU.
KILLER = """
import os, signal, sys
import memgate.train.history as history
import memgate.train.loop as loop
import memgate.train.precision as precision
import memgate.train.rundir as rundir
precision.cpu_has_bf16 = lambda *a: True
point, epochs, config = sys.argv[1], int(sys.argv[2]), sys.argv[3]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if point == "in_history":  # one history's row of the last epoch is written, the others' and the checkpoint not
    real_w = history.History.write
    def write(self, epoch, rows):
        if epoch == epochs - 1:
            self.names = self.names[:1]
            real_w(self, epoch, rows)
            die()
        real_w(self, epoch, rows)
    history.History.write = write
elif point == "after_history":  # the last epoch's history is written, its checkpoint is not
    real_s = loop.ckpt_io.save
    loop.ckpt_io.save = lambda obj, path: die() if obj["epoch"] == epochs else real_s(obj, path)
elif point == "after_checkpoint":  # the checkpoint of the last epoch is written, metrics.jsonl is not
    real = rundir.write_metrics
    rundir.write_metrics = lambda run, rows: die() if len(rows) == epochs else real(run, rows)
elif point == "after_metrics":  # metrics.jsonl is written, the last epoch's gates.npz is not
    real_g = rundir.write_gates
    rundir.write_gates = lambda run, a: die() if a.get("history_epochs") == epochs else real_g(run, a)
elif point == "after_gates":  # every per-epoch file and the final npz files are written, the summary is not
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
POINTS = ["in_history", "after_history", "after_checkpoint", "after_metrics", "after_gates", "mid_epoch"]

SUMMARY_VOLATILE = ("train_time_s", "out")


def _train(config, point="none", epochs=3):
    return subprocess.run([sys.executable, "-c", KILLER, point, str(epochs), str(config)], capture_output=True)


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
    """The uninterrupted run's outputs, per precision (computed once each)."""
    done = {}

    def outputs(amp):
        if amp not in done:
            root = tmp_path_factory.mktemp(f"ref_{amp}")
            cfg = tiny(npz, root / "run", "train.epochs=3", "data.label_noise=0.2", f"train.amp={amp}")
            (root / "c.toml").write_text(cfg.to_toml())
            assert _train(root / "c.toml").returncode == 0
            done[amp] = _outputs(root / "run")
        return done[amp]

    return outputs


# fp32 at every kill point: what is written when does not depend on the precision. bf16 at the two
# where its state could be lost: the checkpoint of a finished epoch and one taken mid-epoch (on a
# CPU without native bf16 it is emulated, several times slower, so not at every point).
CASES = [(p, "false") for p in POINTS] + [("after_history", "true"), ("mid_epoch", "true")]


@pytest.mark.slow
@pytest.mark.parametrize("point,amp", CASES)
def test_kill_9_in_the_last_epoch_then_resume_equals_uninterrupted(npz, tmp_path, reference, point, amp):
    run = tmp_path / "run"
    extra = ["train.checkpoint_every_s=0.001"] if point == "mid_epoch" else []
    cfg = tiny(npz, run, "train.epochs=3", "data.label_noise=0.2", f"train.amp={amp}", *extra)
    (tmp_path / "c.toml").write_text(cfg.to_toml())
    killed = _train(tmp_path / "c.toml", point)
    assert killed.returncode == -9, killed.stderr.decode()[-500:]
    assert not (run / "summary.json").exists()
    assert (run / ".lock").exists()  # a dead process's lock: the next command takes it over
    if point != "after_gates":  # a reader sees whole epochs that a checkpoint holds, never a partial one
        partial = read_gates(run)
        assert partial["g_b3"].shape[0] == 2  # gates.npz of epoch 2 names 2 rows, whatever history holds
        assert np.array_equal(partial["g_b3"], reference(amp)[1]["g_b3"][:2])
    resumed = _train(tmp_path / "c.toml")
    assert resumed.returncode == 0, resumed.stderr.decode()[-500:]
    assert 'precision = "' + ("bf16" if amp == "true" else "fp32") in (run / "config.toml").read_text()
    assert not (run / "history").exists()  # the finished run's npz files hold the histories
    metrics, gates, summary = _outputs(run)
    ref_metrics, ref_gates, ref_summary = reference(amp)
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
    second = subprocess.run(
        [sys.executable, "-m", "memgate", "train", "-c", str(tmp_path / "b.toml")], capture_output=True
    )
    assert first.wait(timeout=300) == 0
    assert second.returncode == 2
    err = second.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "in use by memgate process" in err, err
    assert "lr = 0.1\n" in (run / "config.toml").read_text()
    assert json.loads((run / "summary.json").read_text())["epochs"] == 10
    later = subprocess.run(
        [sys.executable, "-m", "memgate", "train", "-c", str(tmp_path / "b.toml")], capture_output=True
    )
    assert later.returncode == 2  # later on: a run of another config, refused
