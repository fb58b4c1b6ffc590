"""Detection scores from training dynamics, and `memgate analyze` on runs with and without noise."""

import importlib.util
import json

import numpy as np
from runfactory import tiny

from memgate.analysis.detection import cumulative_scores, first_learned, forgetting_events, scores
from memgate.cli import main
from memgate.train.run import train as run_training

# epochs x samples: 0 learned, forgotten, relearned; 1 never learned; 2 forgotten at the end; 3 always right
CORRECT = np.array([[1, 0, 1, 1], [0, 0, 1, 1], [1, 0, 1, 1], [1, 0, 0, 1]])


def test_forgetting_events_by_hand():
    assert forgetting_events(CORRECT).tolist() == [1, 4, 1, 0]


def test_first_learned_for_good_by_hand():
    assert first_learned(CORRECT).tolist() == [3, 5, 5, 1]


def test_accumulated_scores_by_hand_and_equal_to_the_whole_run_scores_at_the_end():
    rng = np.random.default_rng(0)
    e, n = CORRECT.shape
    signals = {
        "correct": CORRECT.astype(np.float16),
        "margin": rng.normal(size=(e, n)).astype(np.float32),
        "loss": rng.exponential(size=(e, n)).astype(np.float32),
    }
    acc = {k: list(v) for k, v in cumulative_scores(signals).items()}
    # after epoch 2: forgetting 1 for sample 0 (right, then wrong), never right so far (sample 1) = 2
    assert acc["forgetting_to_epoch"][1].tolist() == [1, 2, 0, 0]
    assert np.allclose(acc["neg_aum_to_epoch"][1], -signals["margin"][:2].mean(0))
    p = np.exp(-signals["loss"][:2].astype(np.float64))
    assert np.allclose(acc["neg_confidence_to_epoch"][1], -p.mean(0))
    assert np.allclose(acc["variability_to_epoch"][1], p.std(0))
    whole = scores({**signals, "noisy": np.zeros(n, bool)}, None)
    for k in ("neg_aum", "forgetting", "neg_confidence", "variability"):
        assert len(acc[f"{k}_to_epoch"]) == e
        assert np.allclose(acc[f"{k}_to_epoch"][-1], whole[k]), k


def test_analyze_reports_detection_for_noisy_runs_and_skips_clean_ones(npz, tmp_path, capsys):
    for name, noise in (("noisy", "0.25"), ("clean", "0.0")):
        run_training(tiny(npz, tmp_path / name, "train.epochs=3", f"data.label_noise={noise}"))
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "clean")]) == 0
    out = capsys.readouterr().out
    assert "detection: skipped, the run has no injected label noise" in out
    assert not (tmp_path / "clean" / "detection.json").exists()
    assert main(["analyze", str(tmp_path / "noisy")]) == 0
    res = json.loads((tmp_path / "noisy" / "detection.json").read_text())
    for key in ("g_final_b3", "g_mean_b3", "loss_final", "loss_mean", "neg_aum", "forgetting", "first_learned"):
        assert 0 <= res["scores"][key]["auroc"] <= 1, key
    assert "gate_loss_b3_final" in res["scores"] and "gate_entropy_b3_final" in res["scores"]
    assert ("cleanlab" in res["scores"]) == (importlib.util.find_spec("cleanlab") is not None)  # optional extra
    assert len(res["auroc_per_epoch"]["g_b3"]) == 3 == len(res["auroc_per_epoch"]["neg_aum_to_epoch"])
    # The toy classes are learned in an epoch, so the wrongly labelled samples keep a high loss.
    assert res["scores"]["loss_mean"]["auroc"] > 0.6
    assert (tmp_path / "noisy" / "detection.md").read_text().startswith("# Noisy-label detection")
    assert (tmp_path / "noisy" / "detection_auroc.png").stat().st_size > 5000
