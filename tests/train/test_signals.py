"""Per-sample training signals: exact per-batch formulas, and what a run writes to signals.npz."""

import math

import numpy as np
import pytest
import torch
from runfactory import tiny

from memgate.train.run import train as run_training
from memgate.train.rundir import read_metrics, read_signals
from memgate.train.signals import per_sample, probs_epochs, signal_names


def test_per_sample_formulas_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    gate = {3: torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])}
    y = torch.tensor([0, 2])
    s = per_sample(logits, gate, y)
    lse0 = math.log(math.exp(2) + 1 + math.exp(-1))
    lse1 = math.log(1 + math.exp(3) + math.e)
    assert s["loss"].tolist() == pytest.approx([lse0 - 2, lse1 - 1])
    assert s["margin"].tolist() == pytest.approx([2.0, -2.0])  # given label minus largest other
    assert s["correct"].tolist() == [1.0, 0.0]
    assert s["gate_entropy_b3"][0].item() == pytest.approx(math.log(3))
    assert s["gate_loss_b3"][0].item() == pytest.approx(math.log(3))
    assert s["gate_loss_b3"][1].item() == pytest.approx(math.log(math.exp(10) + 2), rel=1e-5)
    # EL2N = |softmax - one-hot|_2, written out by hand from the same logits
    p0 = [math.exp(v - lse0) for v in (2.0, 0.0, -1.0)]
    p1 = [math.exp(v - lse1) for v in (0.0, 3.0, 1.0)]
    el2n0 = math.sqrt((p0[0] - 1) ** 2 + p0[1] ** 2 + p0[2] ** 2)
    el2n1 = math.sqrt(p1[0] ** 2 + p1[1] ** 2 + (p1[2] - 1) ** 2)
    assert s["el2n"].tolist() == pytest.approx([el2n0, el2n1], rel=1e-6)
    assert set(s) == set(signal_names([3]))


def test_probs_epochs_follow_the_first_lr_drop(npz, tmp_path):
    cfg = tiny(npz, tmp_path, "train.epochs=30")
    assert cfg.train.milestones == (12, 18)
    assert probs_epochs(cfg) == {"probs_final": 29, "probs_before_drop": 11}


@pytest.mark.parametrize("gated", [True, False])
def test_run_writes_signals_consistent_with_its_metrics(npz, tmp_path, gated):
    extra = ["train.milestones=[2]"] + ([] if gated else ["model.gates=[]", "gate.hidden=[]"])
    cfg = tiny(npz, tmp_path / "run", "train.epochs=3", "data.label_noise=0.2", *extra)
    run_training(cfg)
    sig = read_signals(tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    n = 448
    names = signal_names([3] if gated else [])
    for k in names:
        assert sig[k].shape == (3, n) and sig[k].dtype == np.float16, k
    for e, row in enumerate(rows):
        assert sig["correct"][e].astype(np.float64).mean() == pytest.approx(row["train_acc"], abs=1e-9)
        assert sig["loss"][e].astype(np.float64).mean() == pytest.approx(row["train_loss"], rel=2e-3)
    assert sig["probs_before_drop_epoch"] == 2 and sig["probs_final_epoch"] == 3
    for key in ("probs_before_drop", "probs_final"):
        p = sig[key].astype(np.float32)
        assert p.shape == (n, 10) and np.allclose(p.sum(1), 1, atol=1e-2)
    # correctness at the final epoch is the argmax of the same pass's softmax on the given label
    agree = (sig["probs_final"].astype(np.float32).argmax(1) == sig["labels"]) == (sig["correct"][-1] == 1)
    assert agree.mean() > 0.99  # float16 rounding can flip a near-tie
    assert sig["noisy"].sum() > 0 and np.array_equal(sig["indices"], np.sort(sig["indices"]))
    # EL2N of the final epoch is the distance of that pass's softmax from the given label's one-hot
    el2n = np.linalg.norm(p - np.eye(10)[sig["labels"]], axis=1)
    assert np.abs(el2n - sig["el2n"][-1].astype(np.float32)).max() < 5e-3


def test_el2n_matches_the_reference_formula_and_its_bounds():
    """data_diet (Paul et al.) computes EL2N as the row norm of softmax(logits) - one_hot(y)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=g) * 4
    y = torch.randint(0, 10, (64,), generator=g)
    ref = np.linalg.norm(torch.softmax(logits, 1).numpy() - np.eye(10)[y.numpy()], axis=1)
    assert np.allclose(per_sample(logits, {}, y)["el2n"].numpy(), ref, atol=1e-6)
    sure = per_sample(torch.tensor([[50.0, 0.0], [0.0, 50.0]]), {}, torch.tensor([0, 0]))["el2n"]
    assert sure.tolist() == pytest.approx([0.0, math.sqrt(2)], abs=1e-6)  # right and certain; wrong and certain
