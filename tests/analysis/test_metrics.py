"""Rank metrics against values computed by hand, ties included."""

import numpy as np
import pytest

from memgate.analysis.metrics import auroc, average_precision, fpr_at_tpr, precision_recall_at_k

S = np.array([0.9, 0.8, 0.8, 0.3, 0.1])
T = np.array([1, 0, 1, 0, 0])


def test_auroc_counts_a_tied_pair_as_one_half():
    # positives 0.9, 0.8 vs negatives 0.8, 0.3, 0.1: 3 + (0.5 + 1 + 1) = 5.5 of 6 pairs
    assert auroc(S, T) == pytest.approx(5.5 / 6)
    assert auroc(-S, T) == pytest.approx(0.5 / 6)
    assert auroc(np.ones(5), T) == 0.5
    assert np.isnan(auroc(S, np.zeros(5)))


def test_average_precision_groups_ties_into_one_threshold():
    # 0.9 -> recall 1/2 at precision 1; the tied 0.8 pair -> recall 2/2 at precision 2/3
    assert average_precision(S, T) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision(np.ones(5), T) == pytest.approx(2 / 5)
    assert average_precision(np.array([3.0, 2.0, 1.0]), np.array([0, 0, 1])) == pytest.approx(1 / 3)


def test_precision_and_recall_at_k_share_a_tied_group_pro_rata():
    p, r = precision_recall_at_k(S, T, 2)  # 0.9 is in; one of the two tied 0.8s, half a positive
    assert (p, r) == (pytest.approx(0.75), pytest.approx(0.75))
    p, r = precision_recall_at_k(S, T, 1)
    assert (p, r) == (1.0, 0.5)
    p, r = precision_recall_at_k(S, T, 5)
    assert (p, r) == (pytest.approx(0.4), 1.0)


def test_fpr_at_95_tpr():
    # both positives must be flagged: threshold 0.8 flags one of the three negatives
    assert fpr_at_tpr(S, T) == pytest.approx(1 / 3)
    assert fpr_at_tpr(np.array([5.0, 4.0, 1.0, 0.0]), np.array([1, 1, 0, 0])) == 0.0


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="finite"):
        auroc(np.array([np.nan, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="2 scores for 3"):
        auroc(np.array([0.0, 1.0]), np.array([0, 1, 1]))
