"""memgate scores: the final network's per-sample scores in dataset-index order, and what g ranks."""

import numpy as np
import pytest
import torch
from runfactory import tiny

from memgate.analysis.export import per_sample
from memgate.analysis.metrics import auroc
from memgate.cli import main
from memgate.data import find_data, load_dataset
from memgate.train.run import train as run_training


def test_per_sample_scores_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    s = per_sample(logits, {3: torch.tensor([0.25, 0.75])}, np.array([0, 1]))
    assert np.allclose(s["margin"].astype(float), [2, -2], atol=1e-3)
    p = torch.softmax(logits, 1)
    assert np.allclose(s["loss"].astype(float), -np.log([float(p[0, 0]), float(p[1, 1])]), atol=1e-3)
    assert np.allclose(s["max_softmax"].astype(float), p.amax(1).numpy(), atol=1e-3) and s["g_b3"].dtype == np.float16


def test_scores_export(npz, tmp_path, capsys):
    run = tmp_path / "run"
    run_training(tiny(npz, run, "train.epochs=2", "data.label_noise=0.2"))
    assert main(["scores", str(run), "-o", str(tmp_path / "s")]) == 0
    train, test = (np.load(tmp_path / "s" / f"{n}_scores.npz") for n in ("train", "test"))
    with np.load(run / "signals.npz") as sig:
        assert np.array_equal(train["indices"], np.sort(sig["indices"]))
        order = np.argsort(sig["indices"])
        assert np.array_equal(train["labels"], sig["labels"][order])  # the given (noisy) labels
    assert len(test["indices"]) == len(load_dataset(find_data_path(npz)).y_test)
    assert {"g_b3", "loss", "margin", "max_softmax"} <= set(train.files) and train["g_b3"].dtype == np.float16
    md = (tmp_path / "s" / "scores.md").read_text()
    assert "| -AUM |" in md and "| forgetting events |" in md
    # the test split, never fitted: how well g flags the final network's errors, beside 1 - max softmax
    wrong = test["margin"].astype(float) < 0
    assert f"## On the test split ({len(wrong):,d} images, {wrong.sum():,d} misclassified" in md
    g_row = next(line for line in md.splitlines() if line.startswith("| g (B3) |")).split(" | ")
    assert g_row[2].rstrip(" |") == f"{auroc(test['g_b3'], wrong):.3f}"
    conf = next(line for line in md.splitlines() if line.startswith("| 1 - max softmax |")).split(" | ")
    assert float(conf[2].rstrip(" |")) == pytest.approx(auroc(1 - test["max_softmax"].astype(float), wrong), abs=1e-3)
    assert (tmp_path / "s" / "g_by_class.png").stat().st_size > 10_000
    base = tmp_path / "base"
    run_training(tiny(npz, base, "train.epochs=1", "model.gates=[]", "gate.hidden=[]"))
    capsys.readouterr()
    assert main(["scores", str(base)]) == 2 and "has no gate" in capsys.readouterr().err


def find_data_path(npz):
    from memgate.config import DataConfig

    return find_data(DataConfig(path=str(npz)))
