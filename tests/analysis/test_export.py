"""memgate scores: the final network's per-sample scores in dataset-index order, and what g ranks."""

import numpy as np
import pytest
import torch
from runfactory import tiny
from scipy.stats import spearmanr

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
        # the histories by hand: -AUM is minus the mean margin over the passes; a forgetting event is
        # a pass that gets a sample wrong after one that got it right, and a sample never learned counts
        # as forgotten at every pass (Toneva et al.)
        assert np.allclose(train["neg_aum"], -sig["margin"].astype(np.float64).mean(0)[order], atol=1e-5)
        c = sig["correct"].astype(int)[:, order]
        events = np.where(c.any(0), ((c[:-1] == 1) & (c[1:] == 0)).sum(0), len(c))
        assert np.array_equal(train["forgetting"], events) and (events == len(c)).any()
        assert np.array_equal(train["loss_last_pass"], sig["loss"][-1][order].astype(np.float32))
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


def test_an_ungated_run_gets_its_scores_and_a_gated_run_sets_g_beside_them(npz, tmp_path, capsys):
    """The baseline of a seed: the same files without g, its own confidence on the test split; a gated
    run of the same data sets g beside a column of them (FILE.npz:KEY) on the samples both hold, and
    refuses one whose labels are other samples' (the same images with other noisy labels)."""
    base, clean, gated = tmp_path / "base", tmp_path / "clean", tmp_path / "gated"
    noise = "data.label_noise=0.2"
    run_training(tiny(npz, base, "train.epochs=1", "model.gates=[]", "gate.hidden=[]", noise))
    run_training(tiny(npz, clean, "train.epochs=1", "model.gates=[]", "gate.hidden=[]"))
    run_training(tiny(npz, gated, "train.epochs=1", noise))
    capsys.readouterr()
    assert main(["scores", str(base)]) == 0 and main(["scores", str(clean)]) == 0
    assert "no gate, so no g" in capsys.readouterr().out
    train, test = (np.load(base / f"{n}_scores.npz") for n in ("train", "test"))
    assert not any(k.startswith("g_b") for k in train.files) and {"loss", "csl", "correct"} <= set(train.files)
    md = (base / "scores.md").read_text()
    assert md.startswith("# Scores of an ungated network") and "| g (B" not in md
    row = next(line for line in md.splitlines() if line.startswith("| 1 - max softmax |")).split(" | ")
    a = auroc(1 - test["max_softmax"].astype(float), test["correct"] == 0)
    assert float(row[2]) == pytest.approx(a, abs=1e-3) and not (base / "g_by_class.png").exists()
    assert main(["scores", str(base), "--scores", str(clean / "train_scores.npz:loss")]) == 2
    assert "has no gate" in capsys.readouterr().err

    # the gated run beside its baseline's loss: the row is Spearman of the two columns by dataset index
    assert main(["scores", str(gated), "--scores", f"{base}/train_scores.npz:loss", "-o", str(tmp_path / "s")]) == 0
    g = np.load(tmp_path / "s" / "train_scores.npz")
    assert np.array_equal(g["indices"], train["indices"])
    md = (tmp_path / "s" / "scores.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| base/train_scores:loss |")).split(" | ")
    assert row[1] == f"{spearmanr(g['g_b3'], train['loss']).statistic:+.3f}"
    capsys.readouterr()
    assert main(["scores", str(gated), "--scores", f"{clean}/train_scores.npz:loss", "-o", str(tmp_path / "t")]) == 2
    assert "keyed to other samples" in capsys.readouterr().err and not (tmp_path / "t").exists()
    assert main(["scores", str(gated), "--scores", f"{base}/train_scores.npz:nope", "-o", str(tmp_path / "t")]) == 2
    assert "has no 'nope' array (found: [" in capsys.readouterr().err
    twice = [f"{base}/train_scores.npz:loss", f"{tmp_path}/x/base/train_scores.npz:loss"]
    assert main(["scores", str(gated), "--scores", twice[0], "--scores", twice[1]]) == 2
    assert "both be named 'base/train_scores:loss'" in capsys.readouterr().err


def find_data_path(npz):
    from memgate.config import DataConfig

    return find_data(DataConfig(path=str(npz)))
