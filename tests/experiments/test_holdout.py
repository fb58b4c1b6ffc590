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
