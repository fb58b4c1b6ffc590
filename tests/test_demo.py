from memgate.train.rundir import read_metrics


def test_demo_runs_end_to_end_on_small_data(npz, tmp_path, capsys):
    from memgate.demo import run_demo

    run_demo(
        [f"data.path={npz}", "data.val_size=64", "data.train_subset=200", "train.epochs=2"], out=str(tmp_path / "d")
    )
    text = capsys.readouterr().out
    assert "mean g noisy / clean labels" in text and "final test accuracy" in text
    assert "hardest classes" in text and "so a hard gate cannot skip them" in text  # the demo's gate reads o2
    assert (tmp_path / "d" / "g_hist.png").stat().st_size > 10_000
    assert (tmp_path / "d" / "top_g.png").stat().st_size > 10_000
    assert len(read_metrics(tmp_path / "d")) == 2
