"""Memorisation read from the recorded signals: wrong labels fitted per epoch, the epochs it passes
50% and 90%, and cartography's data map, checked against values worked out by hand."""

import json

import numpy as np
import pytest
from runfactory import tiny

from memgate.analysis.detection import scores
from memgate.analysis.memorisation import crossing_epochs, data_map, fit_by_noise, run_fit
from memgate.cli import main
from memgate.train.run import train as run_training
from memgate.train.rundir import read_metrics, read_signals


def test_fit_by_noise_from_a_hand_made_history():
    correct = np.array([[1, 0, 1, 0, 0], [1, 1, 1, 0, 1], [1, 1, 0, 1, 1]], dtype=np.float16)
    noisy = np.array([False, True, False, True, True])
    fit = fit_by_noise(correct, noisy)
    assert np.allclose(fit["train_acc_noisy"], [0, 2 / 3, 1])
    assert np.allclose(fit["train_acc_clean"], [1, 1, 0.5])
    one = fit_by_noise(correct[1], noisy)  # one epoch's row
    assert np.allclose(one["train_acc_noisy"], [2 / 3])
    assert np.isnan(fit_by_noise(correct, np.zeros(5, bool))["train_acc_noisy"]).all()


def test_crossing_epochs():
    assert crossing_epochs([0.1, 0.5, 0.89, 0.95, 0.8]) == {"memorised_50_epoch": 2, "memorised_90_epoch": 4}
    assert crossing_epochs([0.1, None, 0.3]) == {"memorised_50_epoch": None, "memorised_90_epoch": None}


def test_data_map_coordinates_by_hand():
    p = np.array([[0.2, 0.9], [0.4, 0.9], [0.9, 0.9]])  # epochs x samples: p(given label)
    correct = np.array([[0, 1], [0, 1], [1, 1]])
    dm = data_map(-np.log(p), correct)
    assert np.allclose(dm["confidence"], [0.5, 0.9])
    assert np.allclose(dm["variability"], [np.sqrt(((0.2 - 0.5) ** 2 + (0.4 - 0.5) ** 2 + (0.9 - 0.5) ** 2) / 3), 0])
    assert np.allclose(dm["correctness"], [1 / 3, 1])


@pytest.fixture(scope="module")
def noisy_run(npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("mem") / "run"
    run_training(tiny(npz, out, "train.epochs=3", "data.label_noise=0.3", "train.eval_every=3"))
    return out


def test_a_noisy_run_logs_its_fit_and_analyze_draws_the_data_map(noisy_run, tmp_path, capsys):
    rows, signals = read_metrics(noisy_run), read_signals(noisy_run)
    fit = fit_by_noise(signals["correct"], signals["noisy"])
    assert np.allclose([r["train_acc_noisy"] for r in rows], fit["train_acc_noisy"])
    assert np.allclose([r["train_acc_clean"] for r in rows], fit["train_acc_clean"])
    assert all(np.allclose(run_fit(noisy_run)[k], fit[k]) for k in fit)
    summary = json.loads((noisy_run / "summary.json").read_text())
    assert summary["memorised_final"] == rows[-1]["train_acc_noisy"]
    assert summary.keys() >= {"memorised_50_epoch", "memorised_90_epoch"}
    assert main(["analyze", str(noisy_run), "-o", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert f"wrong labels fitted: {100 * fit['train_acc_noisy'][-1]:.1f}%" in out
    assert (tmp_path / "a" / "data_map.png").stat().st_size > 10_000
    s = scores(signals, None)
    assert np.allclose(s["neg_confidence"], -np.exp(-signals["loss"].astype(np.float64)).mean(0), atol=1e-5)
