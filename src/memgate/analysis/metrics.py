"""Rank metrics of a score against a binary truth (higher score = more likely positive).

Ties are handled the way a random tie-break would on average: AUROC counts a tied positive/negative
pair as one half (Mann-Whitney U), average precision groups tied scores into one threshold (as
scikit-learn does), and precision/recall at k take the expected share of the tied group at the cut.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _check(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.asarray(truth).astype(bool).reshape(-1)
    if s.shape != t.shape:
        raise ValueError(f"{len(s)} scores for {len(t)} truth values")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s, t


def auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count one half)."""
    s, t = _check(scores, truth)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks for ties
    u = ranks[t].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Sum over distinct thresholds of (recall gain) x (precision at that threshold)."""
    s, t = _check(scores, truth)
    n_pos = int(t.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(t)[last_of_group]
    seen = last_of_group + 1
    recall_gain = np.diff(np.r_[0, tp]) / n_pos
    return float((recall_gain * tp / seen).sum())


def precision_recall_at_k(scores: np.ndarray, truth: np.ndarray, k: int) -> tuple[float, float]:
    """Expected precision and recall of the top ``k`` (a tied group at the cut counts pro rata)."""
    s, t = _check(scores, truth)
    n_pos = int(t.sum())
    if k <= 0 or n_pos == 0:
        return float("nan"), float("nan")
    k = min(k, len(s))
    cut = np.sort(s)[::-1][k - 1]
    above, tied = s > cut, s == cut
    hits = t[above].sum() + (k - above.sum()) * t[tied].mean()
    return float(hits / k), float(hits / n_pos)


def fpr_at_tpr(scores: np.ndarray, truth: np.ndarray, tpr: float = 0.95) -> float:
    """Share of negatives flagged at the highest threshold that still flags ``tpr`` of the positives."""
    s, t = _check(scores, truth)
    if not t.any() or t.all():
        return float("nan")
    pos = np.sort(s[t])[::-1]
    threshold = pos[int(np.ceil(tpr * len(pos))) - 1]
    return float((s[~t] >= threshold).mean())
