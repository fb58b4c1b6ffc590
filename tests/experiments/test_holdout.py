"""memgate holdout: exact bookkeeping of who holds out whom, the sweep running (sharded) the models,
and on data with planted atypical samples (labels that contradict their cluster) an estimate that
ranks them lowest, stably across halves of the models."""

import importlib.util
import json

import numpy as np
import pytest
from runfactory import tiny

from memgate.analysis.metrics import auroc
from memgate.cli import main
from memgate.errors import ConfigError
from memgate.experiments.holdout import assign, split_half_stability
from memgate.train.rundir import read_signals


def test_every_sample_is_held_out_by_exactly_m_models_or_one_fold():
    held = assign(1000, models=8, ratio=0.75, folds=0, seed=0)
    assert held.shape == (8, 1000) and (held.sum(0) == 2).all()
    assert 150 < held.sum(1).min() and held.sum(1).max() < 350  # about n * m / K each
    folds = assign(1001, models=0, ratio=0.5, folds=4, seed=1)
    assert (folds.sum(0) == 1).all() and sorted(folds.sum(1)) == [250, 250, 250, 251]
    assert not np.array_equal(assign(1000, 8, 0.75, 0, 0), assign(1000, 8, 0.75, 0, 1))
    for bad in ({"models": 8, "ratio": 0.99}, {"models": 8, "ratio": 0.0}, {"models": 1, "ratio": 0.5}):
        with pytest.raises(ConfigError):
            assign(100, folds=0, seed=0, **bad)


def test_split_half_stability_by_hand():
    held = np.array([[1, 1, 0, 0], [1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 0]], dtype=bool)
    correct = np.array([[0, 1, 0, 0], [0.0, 0, 1, 1], [0, 1, 1, 0], [0, 1, 1, 0]])
    # halves: models (0, 2) and (1, 3), every sample held out by both; estimates [0, 1, 1, 0] and
    # [0, 1, 1, 1]: ranks [1.5, 3.5, 3.5, 1.5] and [1, 3, 3, 3], Pearson of ranks 2 / (2 * sqrt(3))
    s = split_half_stability(held, correct)
    assert s["split_half_n"] == 4
    assert s["split_half_spearman"] == pytest.approx(1 / np.sqrt(3), abs=1e-9)


@pytest.fixture(scope="module")
def config(npz, tmp_path_factory):
    path = tmp_path_factory.mktemp("holdout") / "c.toml"
    path.write_text(
        tiny(npz, "unused", "train.epochs=8", "data.label_noise=0.15", "model.gates=[]", "gate.hidden=[]").to_toml()
    )
    return path


@pytest.mark.slow
def test_plan_run_sharded_collect(config, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        assert main(["holdout", "plan", "-c", str(config), "-o", str(d), "--models", "4", "--ratio", "0.5"]) == 0
    assert main(["holdout", "plan", "-c", str(config), "-o", str(a)]) == 2  # a plan is never overwritten
    assert main(["holdout", "run", str(a), "--shard", "1/2"]) == 0
    capsys.readouterr()
    assert main(["holdout", "collect", str(a)]) == 2
    assert "2 of 4 models are not finished" in capsys.readouterr().err
    assert main(["holdout", "run", str(a), "--shard", "2/2"]) == 0
    assert main(["holdout", "run", str(b)]) == 0  # same threads as a: bit-identical trainings
    for d in (a, b):
        assert main(["holdout", "collect", str(d)]) == 0
    za, zb = (dict(np.load(d / "holdout.npz")) for d in (a, b))
    assert set(za) == set(zb) and all(np.array_equal(za[k], zb[k], equal_nan=True) for k in za)  # sharding: same file
    held = za["held_out"]
    # no sample is ever scored as held out by a network that trained on it; counts add up
    for k in range(4):
        trained = read_signals(a / "models" / f"model{k:02d}" / "seed0")["indices"]
        assert not np.isin(za["indices"][held[k]], trained).any()
        assert np.array_equal(np.sort(trained), np.sort(za["indices"][~held[k]]))
    assert (za["heldout_count"] == 2).all() and (za["in_count"] == 2).all()
    assert np.allclose(za["memorisation"], za["in_correct"].astype(float) - za["cscore"].astype(float), atol=2e-3)
    # the planted atypical samples (corrupted labels) get the lowest estimates
    noisy = za["noisy"].astype(bool)
    assert auroc(za["scores"], noisy) > 0.85
    assert za["cscore"][noisy].astype(float).mean() < 0.3 < za["cscore"][~noisy].astype(float).mean()
    summary = json.loads((a / "holdout.json").read_text())["noisy_auroc"]
    assert summary["1-cscore"] == pytest.approx(auroc(za["scores"], noisy)) and summary["heldout_loss"] > 0.85
    assert ("cleanlab_heldout" in summary) == ("cleanlab" in za) == (importlib.util.find_spec("cleanlab") is not None)
    out = capsys.readouterr().out
    rho = float(out.strip().splitlines()[-1].rsplit(" ", 1)[-1])
    assert rho > 0.5, out
    # analyze reads it as an external score, as it is
    run = a / "models" / "model00" / "seed0"
    assert main(["analyze", str(run), "--scores", str(a / "holdout.npz"), "-o", str(tmp_path / "an")]) == 0
    assert "its AUROC for the injected noisy labels" in capsys.readouterr().out


def test_damaged_or_foreign_plan_files_are_one_line_errors(config, tmp_path, capsys):
    """holdout collect / run on a truncated, empty or key-less plan.npz, a plan.npz that is a folder,
    a grid.toml gone or listing other models; plan over a user's own grid.toml; an emoji in -o."""
    import shutil

    def err_of(argv):
        capsys.readouterr()
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    good = tmp_path / "good"
    assert main(["holdout", "plan", "-c", str(config), "-o", str(good), "--models", "2", "--ratio", "0.5"]) == 0
    cases = {
        "truncated": lambda d: (d / "plan.npz").write_bytes((good / "plan.npz").read_bytes()[:100]),
        "empty": lambda d: (d / "plan.npz").write_bytes(b""),
        "keyless": lambda d: np.savez(d / "plan.npz", other=np.zeros(3)),
        "shapes": lambda d: np.savez(
            d / "plan.npz", indices=np.arange(5), held_out=np.zeros((2, 4), bool), model_seeds=np.arange(2)
        ),
        "a folder": lambda d: ((d / "plan.npz").unlink(), (d / "plan.npz").mkdir()),
        "no grid": lambda d: (d / "grid.toml").unlink(),
        "fewer models": lambda d: (d / "grid.toml").write_text(
            (d / "grid.toml").read_text().split("[[variant]]")[0]
            + "[[variant]]"
            + (d / "grid.toml").read_text().split("[[variant]]")[1]
        ),
    }
    needles = {
        "truncated": "cannot read",
        "empty": "cannot read",
        "keyless": "lacks indices",
        "shapes": "do not fit together",
        "a folder": "plan.npz is missing or not a file",
        "no grid": "grid.toml is missing or not a file",
        "fewer models": "lists 1 models, the plan 2",
    }
    for name, damage in cases.items():
        d = tmp_path / name.replace(" ", "_")
        shutil.copytree(good, d)
        damage(d)
        err = err_of(["holdout", "collect", d])
        assert needles[name] in err, (name, err)
        if name in ("a folder", "no grid"):
            assert "already holds" in err_of(["holdout", "plan", "-c", config, "-o", d])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "grid.toml").write_text("# my own grid\n")
    assert "already holds grid.toml, which a plan would overwrite" in err_of(
        ["holdout", "plan", "-c", config, "-o", mine]
    )
    assert (mine / "grid.toml").read_text() == "# my own grid\n"
    emoji = tmp_path / "plan 😀"
    assert main(["holdout", "plan", "-c", str(config), "-o", str(emoji), "--models", "2", "--ratio", "0.5"]) == 0
    assert main(["sweep", str(emoji / "grid.toml"), "--dry-run", "--runs", str(emoji)]) == 0
    assert "😀" in (emoji / "grid.toml").read_text()


def test_two_plans_into_one_folder_at_once_cannot_both_succeed(config, tmp_path, capsys):
    """While one `holdout plan` writes a folder (it holds the folder's lock), another is refused."""
    import os

    from memgate.train.lock import lock

    folder = tmp_path / "h"
    with lock(folder):
        capsys.readouterr()
        assert main(["holdout", "plan", "-c", str(config), "-o", str(folder), "--models", "2", "--ratio", "0.5"]) == 2
        assert f"is in use by memgate process {os.getpid()}" in capsys.readouterr().err
    assert not (folder / "plan.npz").exists()
    assert main(["holdout", "plan", "-c", str(config), "-o", str(folder), "--models", "2", "--ratio", "0.5"]) == 0
