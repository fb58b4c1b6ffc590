"""Bring your own per-sample score: Spearman correlation with every memgate score, and its own
AUROC on the injected-noise mask (consistency scores, human difficulty ratings, another tool)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ..atomic import write_json
from ..data.npz import read_user_arrays
from ..errors import DataError
from .metrics import auroc


def read_external(path: str | Path, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the run's columns, scores) from an .npz holding ``scores`` indexed by dataset
    training index, or ``indices`` + ``scores``: both 1-D, real numbers, integer indices >= 0."""
    fix = "save it with numpy.savez(file, scores=..., indices=...)"
    arrays = read_user_arrays(path, "scores", fix)
    if "" in arrays:
        raise DataError(f"scores: {path} is a plain .npy array, not an .npz; {fix}")
    if "scores" not in arrays:
        raise DataError(f"scores: {path} has no 'scores' array (found: {sorted(arrays)}); {fix}")
    raw = arrays["scores"]
    if raw.ndim != 1 or raw.dtype.kind not in "biuf":
        raise DataError(f"scores: {path}: 'scores' is {raw.dtype} of shape {raw.shape}; it must be 1-D real numbers")
    scores = raw.astype(np.float64)
    ext_idx = arrays.get("indices", np.arange(len(scores)))
    if ext_idx.ndim != 1 or ext_idx.dtype.kind not in "iu" or len(ext_idx) != len(scores):
        raise DataError(
            f"scores: {path}: 'indices' must be 1-D integers, one per score "
            f"(it is {ext_idx.dtype} of shape {ext_idx.shape}, 'scores' {raw.shape})"
        )
    if len(ext_idx) and (ext_idx.min() < 0 or ext_idx.max() > np.iinfo(np.int64).max):
        raise DataError(
            f"scores: {path}: 'indices' holds {ext_idx.min() if ext_idx.min() < 0 else ext_idx.max()}, "
            "not a dataset index"
        )
    if len(np.unique(ext_idx)) != len(ext_idx) or not np.isfinite(scores).all():
        raise DataError(f"scores: {path} repeats an index or holds a non-finite score")
    ext_idx = ext_idx.astype(np.int64)
    known = np.isin(ext_idx, indices)  # the run's ``indices`` are sorted: positions by binary search
    if known.sum() < 3:
        raise DataError(
            f"scores: {path} scores {known.sum()} of this run's training samples; index it by dataset index"
        )
    if np.ptp(scores[known]) == 0:
        raise DataError(f"scores: {path}: all {known.sum()} scores of this run's samples are equal; nothing to rank")
    return np.searchsorted(indices, ext_idx[known]), scores[known]


def compare_external(path: str | Path, signals: dict, score_map: dict[str, np.ndarray], out_dir: Path) -> list[str]:
    pos, ext = read_external(path, signals["indices"])
    # a memgate score constant over these samples (forgetting events of a short run) has no rank: None
    rho = {k: float(spearmanr(v[pos], ext).statistic) if np.ptp(v[pos]) else None for k, v in score_map.items()}
    result: dict = {"file": str(path), "n": len(pos), "spearman": rho}
    noisy = signals["noisy"].astype(bool)[pos]
    lines = [f"  external scores {path}: {len(pos):,d} of {len(signals['indices']):,d} training samples"]
    if noisy.any() and not noisy.all():
        result["auroc_noisy"] = auroc(ext, noisy)
        lines.append(f"    its AUROC for the injected noisy labels: {result['auroc_noisy']:.3f}")
    ranked = sorted(rho.items(), key=lambda kv: -abs(kv[1]) if kv[1] is not None else 0.0)
    lines += [
        f"    Spearman with {k:<24s} " + (f"{r:+.3f}" if r is not None else "- (constant here)") for k, r in ranked
    ]
    write_json(out_dir / "external_scores.json", result)
    return lines
