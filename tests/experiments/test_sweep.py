import pytest
from datafactory import write_learnable_npz

from memgate.cli import main
from memgate.experiments.report import report
from memgate.experiments.sweep import sweep
from memgate.train import checkpoint as ckpt_io


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
    # Make exactly one run fail: its folder holds a run of another config.
    bad = runs / "grid" / "gated" / "seed1"
    bad.mkdir(parents=True)
    (bad / "config.toml").write_text("seed = 1\n[train]\nlr = 0.5\n")
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
    report(runs / "grid")
    text = (runs / "grid" / "report.md").read_text()
    assert "| baseline | 2 |" in text and "| gated | 1 |" in text
    assert (runs / "grid" / "results.csv").exists() and (runs / "grid" / "curves.png").exists()
    assert (runs / "grid" / "fig2_gated.png").exists()
    # Again: finished runs are skipped, the broken one fails again, the exit status stays non-zero.
    assert main(["sweep", str(tiny_grid / "grid.toml"), "--runs", str(runs)]) == 1
    out = capsys.readouterr().out
    assert "3 run(s) already finished, skipped" in out and "FAILED gated/seed1" in out
    assert "start baseline" not in out


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
