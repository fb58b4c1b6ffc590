import json
import math
import statistics

import pytest
from scipy import stats

from memgate.cli import main
from memgate.errors import ConfigError
from memgate.experiments.grid import load_grid
from memgate.experiments.report import collect, report, summarize, welch


def _fake_run(root, variant, seed, acc, best_val=None, g=None):
    d = root / variant / f"seed{seed}"
    d.mkdir(parents=True)
    summary = {  # every field summary.json must have (memgate/schema.py SUMMARY)
        "epochs": 2,
        "final_test_acc": acc,
        "final_val_acc": best_val,
        "best_val_acc": best_val,
        "best_val_epoch": None if best_val is None else 2,
        "test_acc_at_best_val": None if best_val is None else acc,
        "final_g_mean": g,
        "final_frac_g_above_half": None if g is None else 0.25,
        "train_time_s": 1.0,
        "dataset": "cifar10",
        "n_train": 100,
        "noisy_train": 0,
        "params_total": 1000,
        "params_gate": 0 if g is None else 100,
        "macs": 10**6,
        "macs_skippable": 0,
    }
    (d / "summary.json").write_text(json.dumps(summary))
    rows = [
        {"epoch": e, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "test_acc": acc * e / 2, "epoch_time_s": 1.0}
        for e in (1, 2)
    ]
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
    # same-seed pairs: seeds 0 and 1 only (the baseline's seed 2 has no partner), both above
    assert (g["pairs"], g["pairs_lower"], g["pairs_higher"]) == (2, 0, 2)
    report(root, out=tmp_path / "rep")
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| gated | 2 | 94.00 | 1.41 | 94.00 | +3.00 [" in text
    assert f"| {g['p_value']:.3f} | 0 / 2 of 2 | 0.350 |" in text
    csv_text = (tmp_path / "rep" / "results.csv").read_text().splitlines()
    assert csv_text[0].startswith("variant,n,seeds,test_acc_mean")
    assert len(csv_text) == 3


def test_each_variant_is_compared_with_its_own_baseline_when_the_grid_names_one(tmp_path):
    root = tmp_path / "noise"
    for name, accs in {
        "gated_a": [0.60, 0.62],
        "base_a": [0.50, 0.52],
        "gated_b": [0.80, 0.82],
        "base_b": [0.81, 0.83],
    }.items():
        for s, a in enumerate(accs):
            _fake_run(root, name, s, a)
    meta = {
        "name": "noise",
        "baseline": None,
        "variants": [
            {"name": "gated_a", "baseline": "base_a"},
            {"name": "base_a"},
            {"name": "gated_b", "baseline": "base_b"},
            {"name": "base_b"},
        ],
    }
    (root / "grid.json").write_text(json.dumps(meta))
    rows = {r["variant"]: r for r in summarize(*collect(root))}
    assert rows["gated_a"]["diff_vs_baseline"] == pytest.approx(0.10) and rows["gated_a"]["baseline"] == "base_a"
    assert rows["gated_b"]["diff_vs_baseline"] == pytest.approx(-0.01) and rows["gated_b"]["baseline"] == "base_b"
    assert (rows["gated_b"]["pairs_lower"], rows["gated_b"]["pairs_higher"]) == (2, 0)
    assert "diff_vs_baseline" not in rows["base_a"]
    text = report(root, out=tmp_path / "rep").read_text()
    assert "| gated_b | 2 | 81.00 | 1.41 | - | -1.00 [" in text and "] vs base_b |" in text


def test_a_variant_baseline_must_name_another_variant(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('config = "c.toml"\n[[variant]]\nname = "a"\nbaseline = "a"\n')
    with pytest.raises(ConfigError, match="baseline = 'a' must name another variant"):
        load_grid(grid)


def test_welch_single_seed_has_no_interval():
    w = welch([0.9], [0.8, 0.82])
    assert w["diff"] == pytest.approx(0.09) and w["ci_low"] is None and w["p"] is None


def test_report_without_runs_is_an_error(tmp_path, capsys):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_report_aggregates_noisy_label_and_ood_detection(npz, tmp_path, capsys):
    from runfactory import tiny

    from memgate.train.run import train as run_training

    grid = tmp_path / "grid"
    run_training(tiny(npz, grid / "gated" / "seed0", "train.epochs=2", "data.label_noise=0.25"))
    run_training(
        tiny(
            npz, grid / "base" / "seed0", "train.epochs=2", "data.label_noise=0.25", "model.gates=[]", "gate.hidden=[]"
        )
    )
    assert main(["ood", str(grid / "gated" / "seed0"), "--ood", "gaussian"]) == 0
    capsys.readouterr()
    text = report(grid).read_text()
    section = text.split("## Noisy-label detection")[1].split("##")[0].splitlines()
    head = next(line for line in section if line.startswith("| variant | n | g_final_b3"))
    assert "neg_aum" in head and "forgetting" in head
    gated = next(line for line in section if line.startswith("| gated | 1 |"))
    base = next(line for line in section if line.startswith("| base | 1 |"))
    assert gated.count(" - ") == 0 and base.split(" | ")[2] == "-"  # the baseline has no g
    assert "## Out-of-distribution detection" in text and "| gated | gaussian |" in text


def test_report_takes_variants_and_baselines_from_a_grid_file(tmp_path, capsys):
    """A folder assembled from several sessions has no grid.json: --grid names the grid file."""
    root = tmp_path / "assembled"
    for name, accs in {"gated_a": [0.60, 0.62], "base_a": [0.50, 0.52]}.items():
        for s, a in enumerate(accs):
            _fake_run(root, name, s, a)
    grid = tmp_path / "g.toml"
    grid.write_text(
        'name = "g"\nconfig = "c.toml"\nseeds = [0, 1]\n'
        '[[variant]]\nname = "base_a"\n[[variant]]\nname = "gated_a"\nbaseline = "base_a"\n'
    )
    out = tmp_path / "rep"
    assert main(["report", str(root), "--grid", str(grid), "-o", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| gated_a | 2 | 61.00 | 1.41 | - | +10.00 [" in text and "] vs base_a |" in text
    assert not (root / "grid.json").exists()  # the runs' folder is only read
    capsys.readouterr()
    assert main(["report", str(root), "--grid", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err


def _saved_detection(run, g_auroc):
    """The detection.json `memgate analyze` leaves in a run, for a run kept without its npz files."""
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "noisy_train": 20}))
    scores = {
        k: {"auroc": a, "ap": 0.5, "precision_at_k": 0.4, "recall_at_k": 0.4}
        for k, a in (("g_final_b3", g_auroc), ("loss_final", 0.9), ("neg_aum", 0.95))
    }
    detection = {"n": 100, "n_noisy": 20, "scores": scores, "auroc_per_epoch": {"g_b3": [0.5, None]}}
    (run / "detection.json").write_text(json.dumps(detection))


def test_a_run_kept_without_its_npz_files_reports_its_saved_detection(tmp_path, capsys):
    root = tmp_path / "kept"
    for s, (acc, g_auroc) in enumerate([(0.6, 0.61), (0.62, 0.65)]):
        _fake_run(root, "gated", s, acc, g=0.3)
        _saved_detection(root / "gated" / f"seed{s}", g_auroc)
    _fake_run(root, "clean", 0, 0.7)  # no noise: no detection row
    text = report(root, out=tmp_path / "rep").read_text()
    section = text.split("## Noisy-label detection")[1].split("##")[0]
    assert "| gated | 2 | 0.630 ± 0.028 | 0.900 ± 0.000 | 0.950 ± 0.000 |" in section
    assert "| clean |" not in section
    # a damaged detection.json is one line naming it, before anything is written
    bad = json.loads((root / "gated" / "seed1" / "detection.json").read_text())
    bad["scores"]["neg_aum"]["auroc"] = 1.7
    (root / "gated" / "seed1" / "detection.json").write_text(json.dumps(bad))
    capsys.readouterr()
    assert main(["report", str(root), "-o", str(tmp_path / "rep2")]) == 2
    err = capsys.readouterr().err
    assert "detection.json" in err and "scores.neg_aum.auroc" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "rep2" / "report.md").exists()


def test_report_reads_a_results_folder_of_variant_seed_copies(tmp_path, capsys):
    """results/<study>/<variant>_seed<s>/ (a run's small files kept in git) report like a sweep's folder."""
    sweep_layout, flat = tmp_path / "sweep", tmp_path / "flat"
    flat.mkdir()
    for name, accs in {"base": [0.50, 0.52, 0.55], "base_x": [0.7, 0.72]}.items():
        for s, a in enumerate(accs):
            _fake_run(sweep_layout, name, s, a)
            _fake_run(tmp_path / "tmp", name, s, a)
            (tmp_path / "tmp" / name / f"seed{s}").rename(flat / f"{name}_seed{s}")
    meta, results = collect(flat)
    assert [v["name"] for v in meta["variants"]] == ["base", "base_x"]  # base_x's copies are not base's
    assert [r["seed"] for r in results["base"]] == [0, 1, 2] and len(results["base_x"]) == 2
    rows = summarize(meta, results)
    assert rows == summarize(*collect(sweep_layout)) and rows[0]["test_acc_mean"] == pytest.approx(0.52333, abs=1e-5)
    # one seed in both layouts is ambiguous: a one-line error
    _fake_run(flat, "base", 1, 0.9)
    assert main(["report", str(flat)]) == 2
    assert "seed 1 of base is both" in capsys.readouterr().err


def test_report_of_the_committed_memorise_study_reads_its_real_files(tmp_path):
    """The real results/memorise copies (summary.json, metrics.jsonl, detection.json written by
    memgate analyze) report whole: one row per committed run, detection from detection.json."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    folder = root / "results" / "memorise"
    committed = sorted(p.name for p in folder.iterdir() if (p / "summary.json").exists())
    meta, results = collect(folder, root / "experiments" / "memorise.toml")
    assert sorted(f"{v}_seed{r['seed']}" for v, rs in results.items() for r in rs) == committed
    text = report(folder, out=tmp_path, grid=root / "experiments" / "memorise.toml").read_text()
    section = text.split("## Noisy-label detection")[1].split("\n## ")[0]
    gated = next(line for line in section.splitlines() if line.startswith("| gated_sym20 |"))
    g_final = [
        json.loads((run / "detection.json").read_text())["scores"]["g_final_b3"]["auroc"]
        for run in sorted(folder.glob("gated_sym20_seed*"))
    ]
    assert len(g_final) >= 2
    assert gated.split(" | ")[2] == f"{statistics.mean(g_final):.3f} ± {statistics.stdev(g_final):.3f}"


def test_a_curve_of_one_evaluated_epoch_is_drawn_as_a_point():
    from memgate.analysis.figures import subplots
    from memgate.experiments.report_figures import mean_std

    fig, ax = subplots()
    mean_std(ax, [[3]], [[0.5]], "gated")  # one seed, one evaluated epoch
    mean_std(ax, [[1, 2, 3], [1, 2, 3]], [[0.1, 0.2, 0.3], [0.3, 0.4, 0.5]], "baseline")
    one, many = ax.lines
    assert one.get_marker() == "o" and list(one.get_xdata()) == [3] and list(one.get_ydata()) == [50.0]
    assert many.get_marker() in ("None", None, "") and list(many.get_ydata()) == [20.0, 30.0, 40.0]
    assert len(ax.collections) == 1  # the std band of the two-seed curve only


def test_same_seed_pairs_are_counted_epoch_by_epoch(tmp_path, capsys):
    """Per pair: the final gap in points, epochs where the variant's test accuracy is below the
    baseline's (only epochs both tested; ties are neither) and epochs where its training loss is
    above; a seed without a baseline of its own has no row."""

    def metrics(run, accs, losses):
        rows = [
            {"epoch": e, "lr": 0.1, "train_loss": loss, "train_acc": 0.5, "test_acc": acc, "epoch_time_s": 1.0}
            for e, (acc, loss) in enumerate(zip(accs, losses), 1)
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    _fake_run(tmp_path, "baseline", 0, 0.8)
    _fake_run(tmp_path, "gated", 0, 0.7)
    _fake_run(tmp_path, "gated", 1, 0.7)
    metrics(tmp_path / "baseline" / "seed0", [0.5, 0.6, None, 0.7, 0.8], [1.0] * 5)
    metrics(tmp_path / "gated" / "seed0", [0.4, 0.6, 0.9, 0.75, 0.7], [1.2, 0.9, 1.0, 1.1, 1.3])
    text = report(tmp_path).read_text()
    section = text.split("## Same-seed pairs, epoch by epoch")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| gated |")]
    assert rows == ["| gated | 0 | -10.00 | 2 of 4 | 3 of 5 |"]
