import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datafactory import write_learnable_npz
from scipy import stats

from memgate import checkpoint as ckpt_io
from memgate.cli import main
from memgate.config import ConfigError
from memgate.experiments import collect, load_grid, report, shard_runs, summarize, sweep, welch
from memgate.training import read_metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "name,variants,seeds", [("table1", 11, 5), ("table2", 9, 5), ("table3", 9, 1), ("table4", 5, 1), ("quick", 3, 2)]
)
def test_shipped_grids_expand_and_validate(name, variants, seeds):
    grid = load_grid(ROOT / "experiments" / f"{name}.toml")
    runs = grid.runs("runs")
    assert len(runs) == variants * seeds
    assert len({r.out for r in runs}) == len(runs)
    position = {r.out: i for i, r in enumerate(runs)}
    for r in runs:
        assert f"seed={r.seed}" in r.overrides and f"out=runs/{name}/{r.variant}/seed{r.seed}" in r.overrides
        if r.depends_on is not None:  # baseline initialisation: same seed, ordered first
            assert r.depends_on == Path("runs") / name / "baseline" / f"seed{r.seed}"
            assert position[r.depends_on] < position[r.out]
            assert f"train.init={r.depends_on}" in r.overrides
    assert main(["sweep", str(ROOT / "experiments" / f"{name}.toml"), "--dry-run"]) == 0


def test_table1_rows_and_paper_numbers():
    grid = load_grid(ROOT / "experiments" / "table1.toml")
    by_name = {v["name"]: v for v in grid.variants}
    assert by_name["baseline"]["paper"] == [93.478, 0.2644]
    assert by_name["scratch_lr0.01_const"]["paper"][0] == 94.12
    assert "train.gate_iters=5" in by_name["scratch_lr0.01_const_k5"]["overrides"]
    assert sum(1 for v in grid.variants if v.get("init_from") == "baseline") == 4


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 60])
def test_sharding_is_a_deterministic_partition_that_keeps_dependencies_together(count):
    runs = load_grid(ROOT / "experiments" / "table1.toml").runs("runs")
    shards = [shard_runs(runs, i, count) for i in range(1, count + 1)]
    outs = [r.out for s in shards for r in s]
    assert sorted(outs) == sorted(r.out for r in runs)  # every run in exactly one shard
    assert len(outs) == len(set(outs))
    for s in shards:
        mine = {r.out for r in s}
        assert all(r.depends_on is None or r.depends_on in mine for r in s)
    assert [[r.out for r in s] for s in shards] == [
        [r.out for r in shard_runs(runs, i, count)] for i in range(1, count + 1)
    ]
    sizes = [len(s) for s in shards]
    if count <= 4:
        assert max(sizes) - min(sizes) <= 5  # the largest dependency group has 5 runs


def test_bad_grids_and_shards_are_one_line_errors(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text('config = "x.toml"\n[[variant]]\nname = "a"\ninit_from = "b"\n')
    with pytest.raises(ConfigError, match="init_from='b'"):
        load_grid(grid)
    grid.write_text('config = "x.toml"\ncolour = 1\n[[variant]]\nname = "a"\n')
    assert main(["sweep", str(grid), "--dry-run"]) == 2
    assert "unknown key(s) ['colour']" in capsys.readouterr().err
    assert main(["sweep", str(ROOT / "experiments" / "quick.toml"), "--shard", "5/4", "--dry-run"]) == 2
    assert main(["sweep", str(ROOT / "experiments" / "quick.toml"), "model.depth=21", "--dry-run"]) == 2
    assert "model.depth=21" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a real sweep


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


def _fake_run(root, variant, seed, acc, best_val=None, g=None):
    d = root / variant / f"seed{seed}"
    d.mkdir(parents=True)
    summary = {
        "final_test_acc": acc,
        "best_val_acc": best_val,
        "final_g_mean": g,
        "final_frac_g_above_half": None if g is None else 0.25,
    }
    (d / "summary.json").write_text(json.dumps(summary))
    rows = [{"epoch": e, "test_acc": acc * e / 2, "val_acc": None} for e in (1, 2)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_statistics_match_hand_computation(tmp_path):
    root = tmp_path / "g"
    for s, a in enumerate([0.90, 0.92, 0.91]):
        _fake_run(root, "baseline", s, a, best_val=a + 0.01)
    for s, a in enumerate([0.93, 0.95]):
        _fake_run(root, "gated", s, a, best_val=a, g=0.3 + s / 10)
    meta, results = collect(root)
    rows = {r["variant"]: r for r in summarize(meta, results)}
    g = rows["gated"]
    assert g["n"] == 2 and g["test_acc_mean"] == pytest.approx(0.94)
    assert g["test_acc_std"] == pytest.approx(math.sqrt(((0.93 - 0.94) ** 2 + (0.95 - 0.94) ** 2) / 1))
    assert rows["baseline"]["test_acc_std"] == pytest.approx(0.01)
    assert rows["baseline"]["best_val_acc_mean"] == pytest.approx(0.92)
    assert g["g_mean"] == pytest.approx(0.35)
    # Welch by hand: variances of the means, Welch-Satterthwaite df, t quantile.
    va, vb = 0.0002 / 2, 0.0001 / 3
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 1 + vb**2 / 2)
    assert g["diff_vs_baseline"] == pytest.approx(0.03)
    assert g["ci_low"] == pytest.approx(0.03 - stats.t.ppf(0.975, df) * se)
    assert g["ci_high"] == pytest.approx(0.03 + stats.t.ppf(0.975, df) * se)
    assert g["p_value"] == pytest.approx(2 * stats.t.sf(0.03 / se, df))
    report(root, out=tmp_path / "rep")
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| gated | 2 | 94.00 | 1.41 | 94.00 | +3.00 [" in text
    csv_text = (tmp_path / "rep" / "results.csv").read_text().splitlines()
    assert csv_text[0].startswith("variant,n,seeds,test_acc_mean")
    assert len(csv_text) == 3


def test_welch_single_seed_has_no_interval():
    w = welch([0.9], [0.8, 0.82])
    assert w["diff"] == pytest.approx(0.09) and w["ci_low"] is None and w["p"] is None


def test_report_without_runs_is_an_error(tmp_path, capsys):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no finished runs" in capsys.readouterr().err


# ----------------------------------------------------------------------------- DDP


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


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_preset_loads(path):
    from memgate.config import load_config

    cfg = load_config(path)
    if path.name.startswith("table"):
        assert cfg.data.val_size == 0 and cfg.train.epochs == 300 and cfg.train.milestones == (120, 180)
        assert cfg.train.warmup_epochs == 1 and cfg.train.batch_size == 128 and cfg.train.lr == 0.1
    if path.name.startswith(("table2", "table3")):
        assert cfg.model.num_classes == 100 and cfg.data.dataset == "cifar100"
    if path.name.startswith("table2"):
        assert (cfg.model.depth, cfg.model.block) == (164, "bottleneck")
    if path.name in ("baseline.toml", "gated_b3.toml"):
        assert cfg.train.epochs == 333 and cfg.train.milestones == (133, 200) and cfg.data.val_size == 5000
