import json

import numpy as np

from memgate.train.rundir import read_gates, read_metrics


def test_demo_runs_end_to_end_on_small_data(npz, tmp_path, capsys):
    from memgate.demo import run_demo

    run_demo(
        [f"data.path={npz}", "data.val_size=64", "data.train_subset=200", "train.epochs=2"], out=str(tmp_path / "d")
    )
    text = capsys.readouterr().out
    assert "mean g noisy / clean labels" in text and "final test accuracy" in text
    assert "hardest classes" in text and "so a hard gate cannot skip them" in text  # the demo's gate reads o2
    assert "The demo stops after one LR drop" in text
    assert (tmp_path / "d" / "g_hist.png").stat().st_size > 10_000
    assert (tmp_path / "d" / "top_g.png").stat().st_size > 10_000
    rows = read_metrics(tmp_path / "d")
    assert len(rows) == 2
    # demo.json: the printed table, by epoch, with the machine; g of the noisy and the clean samples
    # recomputed here from gates.npz
    demo = json.loads((tmp_path / "d" / "demo.json").read_text())
    assert set(demo["machine"]) == {"cpu", "threads", "torch"} and demo["precision"] in ("bf16", "fp32")
    g = read_gates(tmp_path / "d")
    for e, (row, r) in enumerate(zip(demo["epochs"], rows)):
        assert row["epoch"] == r["epoch"] and row["test_acc"] == r["test_acc"] and row["g_mean"] == r["g_mean"]
        assert row["wrong_labels_fitted"] == r["train_acc_noisy"]
        gg = g["g_b3"][e].astype(np.float64)
        assert (
            abs(row["g_noisy"] - gg[g["noisy"]].mean()) < 1e-6 and abs(row["g_clean"] - gg[~g["noisy"]].mean()) < 1e-6
        )


def test_the_demo_recipe_stops_after_one_lr_drop():
    from memgate.config import load_config
    from memgate.demo import DEMO_OVERRIDES

    cfg = load_config(None, list(DEMO_OVERRIDES))
    assert (cfg.train.epochs, cfg.train.milestones, cfg.data.train_subset, cfg.data.augment) == (18, (12,), 2000, False)
