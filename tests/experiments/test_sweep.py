import re
import shutil
from pathlib import Path

import pytest
from datafactory import write_learnable_npz

from memgate.cli import main
from memgate.config import load_config
from memgate.errors import MemgateError
from memgate.experiments.grid import load_grid
from memgate.experiments.report import report
from memgate.experiments.sweep import sweep
from memgate.train import checkpoint as ckpt_io
from memgate.train.rundir import read_metrics


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    d = tmp_path_factory.mktemp("grid")
    npz = write_learnable_npz(d / "toy.npz", n_train=256, n_test=64)
    (d / "base.toml").write_text(
        f'device = "cpu"\n[model]\ndepth = 14\ngates = [3]\n[gate]\nhidden = [16]\n'
        f'[data]\npath = "{npz}"\nval_size = 32\n[train]\nepochs = 1\nbatch_size = 32\ncheckpoint_every_s = 0\n'
    )
    (d / "grid.toml").write_text(
        'title = "tiny"\nconfig = "base.toml"\nseeds = [0, 1]\n'
        '[[variant]]\nname = "baseline"\noverrides = ["model.gates=[]", "gate.hidden=[]"]\npaper = [50.0, 1.0]\n'
        '[[variant]]\nname = "gated"\ninit_from = "baseline"\noverrides = ["gate_optim.lr=0.05"]\n'
    )
    return d


@pytest.mark.slow
def test_sweep_survives_a_failing_run_reports_and_skips_finished(tiny_grid, tmp_path, capsys):
    runs = tmp_path / "runs"
    # Make exactly one run fail: its folder holds run files without their config.toml.
    bad = runs / "grid" / "gated" / "seed1"
    bad.mkdir(parents=True)
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")
    rc = sweep(tiny_grid / "grid.toml", runs_root=runs, jobs=2)
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAILED gated/seed1" in out and "another config" in out
    done = sorted(str(p.parent.relative_to(runs / "grid")) for p in (runs / "grid").glob("*/seed*/summary.json"))
    assert done == ["baseline/seed0", "baseline/seed1", "gated/seed0"]
    # The gated run started from its seed's baseline.
    assert ckpt_io.load(runs / "grid" / "gated" / "seed0")["config"]["train"]["init"] == str(
        runs / "grid" / "baseline" / "seed0"
    )
    assert main(["sweep", str(tiny_grid / "grid.toml"), "--status", "--runs", str(runs)]) == 0
    status = capsys.readouterr().out.splitlines()
    assert status[4].split(None, 1)[1].startswith("failed at epoch 0/1: run: ") and "another config" in status[4]
    assert status[5].strip() == "3 done, 1 failed"
    report(runs / "grid")
    text = (runs / "grid" / "report.md").read_text()
    assert "| baseline | 2 |" in text and "| gated | 1 |" in text
    # Figure 2 in numbers: the gated run's share of g > 0.5 and mean g at its first and last epoch
    (row,) = read_metrics(runs / "grid" / "gated" / "seed0")
    fig2 = text.split("## Figure 2 in numbers")[1].split("\n## ")[0]
    want = f"| gated | 0 | {100 * row['frac_g_above_half']:.1f} | {100 * row['frac_g_above_half']:.1f} (epoch 1) |"
    assert want in fig2 and f"{row['g_mean']:.3f} | {row['g_mean']:.3f} |" in fig2 and "| baseline |" not in fig2
    assert (runs / "grid" / "results.csv").exists() and (runs / "grid" / "curves.png").exists()
    assert sorted(p.name for p in (runs / "grid").glob("fig2_*.png")) == ["fig2_gated_seed0.png"]
    assert sorted(p.name for p in (runs / "grid").glob("top_g*.png")) == ["top_g_gated_seed0.png"]
    for png in ("fig2_gated_seed0.png", "top_g_gated_seed0.png"):
        assert f"![{png}]({png})" in text
    # a run kept slim (no gates.npz) draws nothing; its figures of an earlier report stay and are listed
    drawn = {png: (runs / "grid" / png).read_bytes() for png in ("fig2_gated_seed0.png", "top_g_gated_seed0.png")}
    (runs / "grid" / "gated" / "seed0" / "gates.npz").unlink()
    report(runs / "grid")
    for png, data in drawn.items():
        assert f"![{png}]({png})" in (runs / "grid" / "report.md").read_text()
        assert (runs / "grid" / png).read_bytes() == data
    # Again: finished runs are skipped, the broken one fails again, the exit status stays non-zero.
    assert main(["sweep", str(tiny_grid / "grid.toml"), "--runs", str(runs)]) == 1
    out = capsys.readouterr().out
    assert "3 run(s) already finished, skipped" in out and "FAILED gated/seed1" in out
    assert "start baseline" not in out


@pytest.mark.slow
def test_runs_of_another_config_are_refused_by_sweep_and_report(tiny_grid, tmp_path, capsys):
    """A finished run trained with another config than the grid now gives it is refused before
    anything starts (the sweep would skip it as done); a report refuses seeds of one variant
    trained with different configs. The baseline's path in train.init may move with --runs."""
    runs = tmp_path / "runs"
    assert sweep(tiny_grid / "grid.toml", runs_root=runs, jobs=2, seeds=(0,)) == 0
    kept = {p: p.read_bytes() for p in (runs / "grid").rglob("*") if p.is_file()}
    grid = (tiny_grid / "grid.toml").read_text()
    (tiny_grid / "edited.toml").write_text(
        'name = "grid"\n' + grid.replace('"gate.hidden=[]"]', '"gate.hidden=[]", "train.lr=0.05"]')
    )
    for extra in ([], ["--status"], ["--dry-run"]):
        capsys.readouterr()
        assert main(["sweep", str(tiny_grid / "edited.toml"), "--runs", str(runs), "--seeds", "0", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"memgate: error: grid: run baseline/seed0 in {runs / 'grid' / 'baseline' / 'seed0'} was trained "
            "with another config than the grid gives it now (train.lr: 0.1 there, 0.05 now); restore the grid "
            "file (and the sweep's KEY=VALUE overrides), or move that folder away to train the run again"
        ), err
    assert main(["sweep", str(tiny_grid / "grid.toml"), "--runs", str(runs), "--seeds", "0", "train.epochs=2"]) == 2
    assert "(train.epochs: 1 there, 2 now); restore the grid" in capsys.readouterr().err  # KEY=VALUE of the sweep
    assert {p: p.read_bytes() for p in (runs / "grid").rglob("*") if p.is_file()} == kept
    moved = tmp_path / "moved"
    shutil.copytree(runs, moved)  # gated/seed0's train.init names the old folder: still the same run
    capsys.readouterr()
    assert main(["sweep", str(tiny_grid / "grid.toml"), "--runs", str(moved), "--seeds", "0", "--status"]) == 0
    assert "2 done" in capsys.readouterr().out
    # the report: baseline seed 1 (copied from seed 0) with another number of epochs in its config
    seed1 = moved / "grid" / "baseline" / "seed1"
    shutil.copytree(moved / "grid" / "baseline" / "seed0", seed1)
    (seed1 / "config.toml").write_text(re.sub("(?m)^seed = 0$", "seed = 1", (seed1 / "config.toml").read_text()))
    report(moved / "grid")  # seeds apart, one recipe
    (seed1 / "config.toml").write_text((seed1 / "config.toml").read_text().replace("epochs = 1\n", "epochs = 2\n"))
    with pytest.raises(MemgateError) as e:
        report(moved / "grid")
    assert str(e.value) == (
        "report: the seeds of baseline were trained with different configs (train.epochs: 2 in seed 1, 1 in "
        "seed 0); a row holds one recipe: remove the odd run or train it again"
    )


def test_output_piped_into_head_ends_quietly(tiny_grid, tmp_path):
    """`memgate sweep --dry-run | head -1`: the reader leaves early; no error line, exit 0."""
    import subprocess
    import sys

    seeds = ",".join(str(s) for s in range(400))  # far more output than a pipe buffer holds
    cmd = [sys.executable, "-m", "memgate", "sweep", str(tiny_grid / "grid.toml"), "--dry-run", "--seeds", seeds]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    first = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait() == 0 and first.startswith(b"grid: 800 runs") and err == ""


def _status_lines(capsys, grid, runs, *extra):
    assert main(["sweep", str(grid), "--status", "--runs", str(runs), *extra]) == 0
    return capsys.readouterr().out.splitlines()


def test_status_of_a_grid_never_run_says_not_started(tiny_grid, tmp_path, capsys):
    lines = _status_lines(capsys, tiny_grid / "grid.toml", tmp_path / "nowhere")
    assert lines[0] == "grid: 4 runs"
    assert [ln.split()[0] for ln in lines[1:5]] == ["baseline/seed0", "gated/seed0", "baseline/seed1", "gated/seed1"]
    assert all(ln.endswith("not started") for ln in lines[1:5])
    assert lines[5].strip() == "4 not started"
    assert "remaining time unknown: 4 run(s)" in lines[6]
    assert not (tmp_path / "nowhere").exists()  # --status writes nothing


def _as_the_grid_gives(grid_file, runs, name, *extra):
    """Write the config.toml that the grid gives run ``name`` into its folder (a faked run's own)."""
    grid = load_grid(grid_file)
    (run,) = [r for r in grid.runs(runs, extra) if r.name == name]
    (run.out / "config.toml").write_text(load_config(grid.config, run.overrides).to_toml())


def test_status_names_every_state_and_the_time_left(tiny_grid, tmp_path, capsys):
    import json
    import os

    runs, epochs = tmp_path / "runs", "train.epochs=3"
    assert sweep(tiny_grid / "grid.toml", [epochs], runs_root=runs, seeds=(0,), variants=("baseline",)) == 0
    capsys.readouterr()
    root = runs / "grid"
    done = root / "baseline" / "seed0"
    rows = [json.loads(x) for x in (done / "metrics.jsonl").read_text().splitlines()]
    rates = sorted(r["epoch_time_s"] + r["eval_time_s"] for r in rows)
    # gated/seed0: stopped after epoch 1 of 3 (a killed run: no summary, no lock, the sweep wrote no exit status)
    stopped = root / "gated" / "seed0"
    shutil.copytree(done, stopped)
    (stopped / "summary.json").unlink()
    (stopped / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")
    # baseline/seed1: the same, but its process still holds the lock
    running = root / "baseline" / "seed1"
    shutil.copytree(stopped, running)
    (running / ".lock").write_text(str(os.getpid()))
    for name in ("gated/seed0", "baseline/seed1"):
        _as_the_grid_gives(tiny_grid / "grid.toml", runs, name, epochs)
    # gated/seed1: the sweep recorded a failure
    failed = root / "gated" / "seed1"
    failed.mkdir(parents=True)
    (failed / "train.log").write_text(
        "$ memgate train ...\nloading data ...\nrun: disk full (StorageError)\nmemgate sweep: exit status 2\n"
    )
    lines = _status_lines(capsys, tiny_grid / "grid.toml", runs, epochs, "--jobs", "2")
    acc, first = 100 * json.loads((done / "summary.json").read_text())["final_test_acc"], 100 * rows[0]["test_acc"]
    rate = rows[0]["epoch_time_s"] + rows[0]["eval_time_s"]
    assert lines[1].split(None, 1)[1] == f"done, test {acc:.2f}% (3 epochs, {rates[1]:.0f} s/epoch)"  # the median
    assert lines[2].split(None, 1)[1] == f"stopped at epoch 1/3, test {first:.2f}%, {rate:.0f} s/epoch"
    assert lines[3].split(None, 1)[1] == f"running at epoch 1/3, test {first:.2f}%, {rate:.0f} s/epoch"
    assert lines[4].split(None, 1)[1] == "failed at epoch 0/3: run: disk full (StorageError)"
    assert lines[5].strip() == "1 done, 1 running, 1 stopped, 1 failed"
    # 2 + 2 epochs left at the runs' own rate, the failed run's 3 at its variant's (gated/seed0's);
    # with 2 lanes the failed gated/seed1 waits for its baseline (running, 2 left), then trains alone
    left, lanes = (4 * rate + 3 * rate) / 3600, (2 * rate + 3 * rate) / 3600
    assert (
        lines[6].strip()
        == f"remaining: {left:.1f} h of training at the measured rates, about {lanes:.1f} h with 2 runs at once"
    )
    # A failed run started again by the sweep counts as stopped until it records a new exit status.
    with open(failed / "train.log", "a") as f:
        f.write("$ memgate train ...\n")
    assert _status_lines(capsys, tiny_grid / "grid.toml", runs, epochs)[4].split(None, 1)[1] == "stopped at epoch 0/3"


def test_the_time_left_is_the_sweeps_schedule_not_the_total_over_the_lanes():
    """time_to_finish plays the sweep's order: running runs hold lanes, the rest start in grid order
    when a lane is free and their baseline has finished (hours as seconds, exact)."""
    from memgate.experiments.grid import Run
    from memgate.experiments.status import RunStatus, time_to_finish

    def run(name, state, hours, dep=None):
        r = Run(name, 0, Path(name), (), Path(dep) if dep else None)
        return RunStatus(r, state, 0, 100, None, None), 3600.0 * hours

    three = [run(n, "not started", 1.5) for n in "abc"]
    assert time_to_finish(three, 2) == 3600.0 * 3.0  # the third trains alone: not 4.5 h / 2 lanes
    assert time_to_finish(three, 3) == 3600.0 * 1.5 and time_to_finish(three, 1) == 3600.0 * 4.5
    # binit waits for its running baseline; the run after it in the grid takes the free lane at once
    binit = [run("base", "running", 1), run("binit", "not started", 2, "base"), run("other", "stopped", 4)]
    assert time_to_finish(binit, 2) == 3600.0 * 4  # other 0-4 h, binit 1-3 h
    assert time_to_finish(binit, 1) == 3600.0 * 7  # one lane: base, binit, other, one after the other
    # more runs running than lanes (another sweep beside): a new run waits until fewer than 2 are left
    crowded = [run(n, "running", h) for n, h in (("r1", 1), ("r2", 2), ("r3", 3))] + [run("new", "not started", 1)]
    assert time_to_finish(crowded, 2) == 3600.0 * 3  # new from 2 h to 3 h
    # a baseline that is not in the list has finished: its dependent starts at once
    assert time_to_finish([run("binit", "failed", 2, "base")], 2) == 3600.0 * 2
    assert time_to_finish([], 2) == 0.0


def test_runs_not_running_are_timed_at_the_machines_pace_now_times_their_variants_cost():
    """Finished runs (other machines, other loads) say what a variant costs relative to the others;
    the running runs say how fast this machine is now. Exact seconds per epoch."""
    from memgate.experiments.grid import Run
    from memgate.experiments.status import RunStatus, run_rates

    def st(variant, seed, state, rate):
        run = Run(variant, seed, Path(f"{variant}{seed}"), (), None)
        return RunStatus(run, state, 0, 9, None, rate)

    done = [st("base", 0, "done", 100.0), st("base", 1, "done", 100.0), st("gated", 0, "done", 200.0)]
    # costs from the finished runs: base 100 / 100 = 1, gated 200 / 100 = 2 (the grid's median is 100)
    others = [st("gated", 1, "stopped", 999.0), st("base", 2, "not started", None), st("new", 0, "not started", None)]
    busy = [st("gated", 2, "running", 300.0), st("base", 3, "running", None)]  # base/seed3: no epoch yet
    # the machine now: 300 s for a gated epoch = 150 s for a grid epoch; "new" has no finished run: cost 1
    assert run_rates(done + others + busy) == [100.0, 100.0, 200.0, 300.0, 150.0, 150.0, 300.0, 150.0]
    # nothing running: a run's own rate, else its variant's median, else the median of all measured
    # (100, 100, 200, 999)
    assert run_rates(done + others) == [100.0, 100.0, 200.0, 999.0, 100.0, 150.0]
    assert run_rates([st("x", 0, "not started", None)]) == [None]


def test_the_rate_of_a_run_is_its_median_epoch_when_done_and_its_recent_median_while_unfinished():
    """A run slowed 10x for its first 5 epochs (other work on the machine) and paused in one: its
    remaining epochs are timed by the median of the last 10; finished, by the median of all 15 (the
    slow epochs do not set the pace of the runs still to come)."""
    from memgate.experiments.status import RECENT, epoch_rate

    secs = [1000.0] * 5 + [100.0, 120.0, 110.0, 90.0, 100.0, 5000.0, 100.0, 130.0, 100.0, 95.0]
    rows = [{"epoch_time_s": s - 10, "eval_time_s": 10.0} for s in secs]
    assert RECENT == 10 and epoch_rate(rows, finished=False) == 100.0  # median of the last 10
    assert epoch_rate(rows, finished=True) == 120.0  # the 8th of the 15 sorted
    assert epoch_rate(rows[:3], finished=False) == 1000.0 and epoch_rate([], finished=False) is None


def test_jobs_spread_over_the_gpus_a_scheduler_gave_and_its_cores(monkeypatch):
    """Faked node: SLURM gave GPUs 4, 5 and 7 and 4 of the node's 64 cores."""
    from memgate.experiments import sweep as sw

    monkeypatch.setattr(sw.os, "sched_getaffinity", lambda pid: {8, 9, 10, 11}, raising=False)
    monkeypatch.setattr(sw.os, "cpu_count", lambda: 64)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,7")
    envs = [sw._env_for(slot, 3) for slot in range(4)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4", "5", "7", "4"]
    assert {e["OMP_NUM_THREADS"] for e in envs} == {"1"}  # 4 cores / 3 jobs, not 64 / 3
    assert sw._env_for(0, 2)["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aa,GPU-bb")  # UUIDs pass through as given
    assert [sw._env_for(s, 2)["CUDA_VISIBLE_DEVICES"] for s in (0, 1)] == ["GPU-aa", "GPU-bb"]
    assert sw._env_for(1, 1)["CUDA_VISIBLE_DEVICES"] == "GPU-aa,GPU-bb"  # one job keeps them all
    # No scheduler: the GPUs torch sees, in order; one GPU or none: the environment as it was.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(sw, "_cuda_count", lambda: 2)
    assert [sw._env_for(s, 2)["CUDA_VISIBLE_DEVICES"] for s in (0, 1, 2)] == ["0", "1", "0"]
    monkeypatch.setattr(sw, "_cuda_count", lambda: 0)
    assert "CUDA_VISIBLE_DEVICES" not in sw._env_for(1, 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting wins
    assert sw._env_for(0, 2)["OMP_NUM_THREADS"] == "3"


def test_ctrl_c_while_a_sweep_waits_is_one_line_and_status_130(monkeypatch, capsys):
    """The runs stop themselves on SIGINT; the sweep waiting on them gets a KeyboardInterrupt, which
    ends in one line naming how to resume, not a traceback."""
    from memgate import cli

    def waiting(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.HANDLERS, "sweep", waiting)
    assert main(["sweep", "grid.toml"]) == 130
    err = capsys.readouterr().err
    assert err == "memgate: stopped: interrupted (Ctrl-C); run the same command to resume\n"


@pytest.mark.slow
def test_sigint_stops_a_sweep_started_with_it_ignored_every_run_saves_and_none_starts(tiny_grid, tmp_path, capsys):
    """A sweep started as a script's background command inherits SIGINT ignored; `kill -INT` to it
    alone must still stop it: both running runs save a checkpoint and exit 130, no gated run starts,
    and nothing is called failed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    sweep_cmd = f"{sys.executable} -m memgate sweep {tiny_grid / 'grid.toml'} train.epochs=5000 --runs {runs} --jobs 2"
    p = subprocess.Popen(
        ["bash", "-c", f"trap '' INT; exec {sweep_cmd}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seeds = [runs / "grid" / "baseline" / f"seed{s}" for s in (0, 1)]

    def trained_an_epoch(out: Path) -> bool:
        try:
            return len(read_metrics(out)) >= 1
        except Exception:  # noqa: BLE001 - not written yet
            return False

    deadline = time.monotonic() + 120
    while not all(trained_an_epoch(s) for s in seeds):
        assert p.poll() is None and time.monotonic() < deadline, p.stdout.read() if p.poll() is not None else ""
        time.sleep(0.2)
    with open(f"/proc/{p.pid}/status") as f:  # the premise: the sweep's process was started ignoring SIGINT
        ignored = int(next(ln for ln in f if ln.startswith("SigIgn:")).split()[1], 16)
    assert ignored & (1 << (signal.SIGINT - 1)) == 0  # the sweep installed its own handler by now
    os.kill(p.pid, signal.SIGINT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 130, out
    assert "FAILED" not in out and "start gated" not in out
    stopped = sorted(re.findall(r"stopped (baseline/seed\d) at its checkpoint", out))
    assert stopped == ["baseline/seed0", "baseline/seed1"]
    assert out.rstrip().endswith("grid: 0/4 runs finished; stopped (SIGINT): run the same command to resume")
    for s in seeds:
        assert (s / "checkpoint.pt").exists() and not (s / "summary.json").exists()
        assert (s / "train.log").read_text().rstrip().endswith("memgate sweep: exit status 130")
    lines = _status_lines(capsys, tiny_grid / "grid.toml", runs, "train.epochs=5000")
    assert lines[-2].strip() == "2 stopped, 2 not started", lines


def test_a_run_stopped_by_a_signal_stops_the_sweep_and_is_not_called_failed(tiny_grid, tmp_path, monkeypatch, capsys):
    """SIGINT sent to one `memgate train` alone (exit 130): the sweep starts nothing after it."""
    from memgate.experiments import sweep as sweep_mod

    launched = []

    def launch(self, grid, run, slot, jobs):
        launched.append(run.name)
        return 130, 1.0

    monkeypatch.setattr(sweep_mod._Lanes, "launch", launch)
    assert sweep(tiny_grid / "grid.toml", runs_root=tmp_path / "runs", jobs=1) == 130
    out = capsys.readouterr().out
    assert launched == ["baseline/seed0"]
    assert "FAILED" not in out and "stopped baseline/seed0 at its checkpoint after 1s (resumable)" in out
    assert out.splitlines()[-1] == (
        "grid: 0/4 runs finished; stopped (baseline/seed0 was interrupted): run the same command to resume"
    )
