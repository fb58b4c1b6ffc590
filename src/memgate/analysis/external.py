"""Bring your own per-sample score: Spearman correlation with every memgate score, and its own
AUROC on the injected-noise mask (consistency scores, human difficulty ratings, another tool)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ..atomic import write_json
from ..errors import DataError
from .metrics import auroc


def read_external(path: str | Path, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the run's columns, scores) from an .npz holding ``scores`` indexed by dataset
    training index, or ``indices`` + ``scores``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(
            f"scores: cannot read {path} as .npz ({e.__class__.__name__}); save it with numpy.savez"
        ) from None
    if "scores" not in arrays:
        raise DataError(f"scores: {path} has no 'scores' array (found: {sorted(arrays)})")
    scores = np.asarray(arrays["scores"], dtype=np.float64).reshape(-1)
    ext_idx = arrays["indices"].reshape(-1) if "indices" in arrays else np.arange(len(scores))
    if ext_idx.dtype.kind not in "iu" or len(ext_idx) != len(scores):
        raise DataError(f"scores: {path}: 'indices' must be integers, one per score ({len(ext_idx)} vs {len(scores)})")
    if len(np.unique(ext_idx)) != len(ext_idx) or not np.isfinite(scores).all():
        raise DataError(f"scores: {path} repeats an index or holds a non-finite score")
    known = np.isin(ext_idx, indices)  # the run's ``indices`` are sorted: positions by binary search
    if known.sum() < 3:
        raise DataError(
            f"scores: {path} scores {known.sum()} of this run's training samples; index it by dataset index"
        )
    return np.searchsorted(indices, ext_idx[known]), scores[known]


def compare_external(path: str | Path, signals: dict, score_map: dict[str, np.ndarray], out_dir: Path) -> list[str]:
    pos, ext = read_external(path, signals["indices"])
    rho = {k: float(spearmanr(v[pos], ext).statistic) for k, v in score_map.items()}
    result: dict = {"file": str(path), "n": len(pos), "spearman": rho}
    noisy = signals["noisy"].astype(bool)[pos]
    lines = [f"  external scores {path}: {len(pos):,d} of {len(signals['indices']):,d} training samples"]
    if noisy.any() and not noisy.all():
        result["auroc_noisy"] = auroc(ext, noisy)
        lines.append(f"    its AUROC for the injected noisy labels: {result['auroc_noisy']:.3f}")
    lines += [f"    Spearman with {k:<24s} {r:+.3f}" for k, r in sorted(rho.items(), key=lambda kv: -abs(kv[1]))]
    write_json(out_dir / "external_scores.json", result)
    return lines
