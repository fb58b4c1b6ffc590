"""g against prediction depth (analysis/depth.py): the routing comparison, mean g per depth and the
Spearman matrix, each against values computed here by hand."""

import numpy as np
import pytest

from memgate.analysis.depth import g_by_depth, routing_rows, spearman_matrix


def test_routing_by_depth_by_g_and_at_random_by_hand():
    # 6 test images; the full network gets 0-3 right, skipping gets 0, 1, 4 right
    full = np.array([1, 1, 1, 1, 0, 0], bool)
    skip = np.array([1, 1, 0, 0, 1, 0], bool)
    depth = np.array([2, 7, 8, 9, 1, 10])  # <= 7: images 0, 1, 4 need no extra layers
    g = np.array([0.9, 0.1, 0.2, 0.8, 0.7, 0.05])  # lowest three: 5, 1, 2
    rows = routing_rows(full, skip, depth, g, first_unit=7)
    assert [r[0] for r in rows][1:4] == [
        "prediction depth <= 7 (needs no extra layers)",
        "lowest g, the same number",
        "random, the same number (expectation)",
    ]
    assert rows[0][1:] == ["0.0%", "66.67"]  # 4 of 6
    assert rows[1][1:] == ["50.0%", f"{100 * 5 / 6:.2f}"]  # skip 0, 1, 4 (all right) + full 2, 3 right, 5 wrong
    assert rows[2][2] == "50.00"  # skip 5 (wrong), 1 (right), 2 (wrong); full 0, 3 right, 4 wrong
    assert rows[3][2] == f"{100 * (0.5 * 3 / 6 + 0.5 * 4 / 6):.2f}"
    assert rows[4][1:] == ["100.0%", "50.00"]
    # the random expectation is the mean over every subset of 3 images
    from itertools import combinations

    accs = [np.where(np.isin(np.arange(6), c), skip, full).mean() for c in combinations(range(6), 3)]
    assert rows[3][2] == f"{100 * np.mean(accs):.2f}"


def test_mean_g_per_depth_skips_empty_depths():
    g = np.array([0.2, 0.4, 0.9, 0.5], np.float16)
    rows = g_by_depth(g, np.array([0, 0, 3, 10]), layers=10)
    assert [(d, n) for d, n, _, _ in rows] == [(0, 2), (3, 1), (10, 1)]
    assert rows[0][2] == pytest.approx(0.3, abs=1e-3)
    assert rows[0][3] == pytest.approx(np.std([0.2, 0.4], ddof=1) / np.sqrt(2), abs=1e-3)
    assert np.isnan(rows[1][3])  # one sample: no standard error


def test_spearman_matrix_uses_the_samples_each_pair_covers():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    c = np.full(50, np.nan)
    c[:20] = a[:20] + rng.normal(size=20) * 0.1
    rho, count = spearman_matrix({"a": a, "b": b, "c": c, "const": np.ones(50)})
    assert count[0, 1] == 50 and count[0, 2] == 20 and count[2, 2] == 20
    assert rho[0, 1] == pytest.approx(spearmanr(a, b).statistic)
    assert rho[0, 2] == pytest.approx(spearmanr(a[:20], c[:20]).statistic)
    assert rho[0, 0] == pytest.approx(1.0) and np.isnan(rho[0, 3]) and np.isnan(rho[3, 3])
