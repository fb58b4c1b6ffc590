"""Bring your own per-sample score: Spearman correlation with every memgate score, and its own
AUROC on the injected-noise mask (consistency scores, human difficulty ratings, another tool)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr

from ..atomic import write_json
from ..data.npz import read_user_arrays
from ..errors import DataError
from .figures import save, subplots
from .metrics import auroc

# the scores external_scores.png draws (the table and the json hold every score)
FIGURE_SCORES = (
    "g_final_b3",
    "g_final_b2",
    "loss_final",
    "loss_mean",
    "neg_aum",
    "forgetting",
    "first_learned",
    "neg_confidence",
)


MAX_LABEL_MISMATCH = 0.01  # a file whose labels disagree on more of the matched samples is keyed to others


def _keys(arrays: dict[str, np.ndarray], n: int, path: str | Path, paths: tuple[str, ...]) -> np.ndarray:
    """The dataset index of each score: ``indices``, else ``paths`` (files of an image-folder
    dataset, as memgate lists them), else the scores' positions."""
    if "indices" in arrays and "paths" in arrays:
        raise DataError(f"scores: {path} has both 'indices' and 'paths'; keep one key")
    if "paths" in arrays:
        names = arrays["paths"]
        if names.ndim != 1 or names.dtype.kind != "U" or len(names) != n:
            raise DataError(f"scores: {path}: 'paths' must be 1-D strings, one per score")
        if not paths:
            raise DataError(
                f"scores: {path} is keyed by file paths, but this run's data has no files (not an image folder); "
                "key it by dataset index ('indices')"
            )
        where = {p: i for i, p in enumerate(paths)}
        return np.array([where.get(str(x).removeprefix("./"), -1) for x in names], dtype=np.int64)
    ext_idx = arrays.get("indices", np.arange(n))
    if ext_idx.ndim != 1 or ext_idx.dtype.kind not in "iu" or len(ext_idx) != n:
        raise DataError(
            f"scores: {path}: 'indices' must be 1-D integers, one per score "
            f"(it is {ext_idx.dtype} of shape {ext_idx.shape}, 'scores' ({n},))"
        )
    if n and (ext_idx.min() < 0 or ext_idx.max() > np.iinfo(np.int64).max):
        raise DataError(
            f"scores: {path}: 'indices' holds {ext_idx.min() if ext_idx.min() < 0 else ext_idx.max()}, "
            "not a dataset index"
        )
    return ext_idx.astype(np.int64)


def score_source(arg: str | Path) -> tuple[Path, str]:
    """The file and the array a ``--scores`` argument names: ``FILE`` (its ``scores``) or
    ``FILE.npz:KEY`` (its array ``KEY``, such as a column of another run's train_scores.npz)."""
    text = str(arg)
    path, sep, key = text.rpartition(":")
    if sep and path.endswith(".npz") and key.isidentifier():
        return Path(path), key
    return Path(text), "scores"


def read_external(
    path: str | Path,
    indices: np.ndarray,
    labels: tuple[np.ndarray, ...] = (),
    paths: tuple[str, ...] = (),
    partial: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the run's columns, scores) from an .npz holding ``scores`` (or the array KEY of
    ``FILE.npz:KEY``: ``score_source``) keyed by dataset
    training index (its position, or ``indices``; for an image-folder dataset also ``paths``, the
    files as memgate lists them). It must cover every training sample of the run (``indices``)
    unless ``partial``; when it holds ``labels``, they must agree with one of the run's label arrays
    (``labels``, by column: the original labels, the given ones) on all but 1% of the matched samples.
    Either failure means the file is keyed to other samples: a result computed on them would be
    silently wrong, so it is refused."""
    fix = "save it with numpy.savez(file, scores=..., indices=...)"
    path, key = score_source(path)
    arrays = read_user_arrays(path, "scores", fix)
    if "" in arrays:
        raise DataError(f"scores: {path} is a plain .npy array, not an .npz; {fix}")
    if key not in arrays:
        raise DataError(f"scores: {path} has no '{key}' array (found: {sorted(arrays)}); {fix}")
    raw = arrays[key]
    if raw.ndim != 1 or raw.dtype.kind not in "biuf":
        raise DataError(f"scores: {path}: '{key}' is {raw.dtype} of shape {raw.shape}; it must be 1-D real numbers")
    scores = raw.astype(np.float64)
    ext_idx = _keys(arrays, len(scores), path, paths)
    matched = ext_idx[ext_idx >= 0]
    if len(np.unique(matched)) != len(matched) or not np.isfinite(scores).all():
        raise DataError(f"scores: {path} repeats a key or holds a non-finite score")
    known = np.isin(ext_idx, indices)  # the run's ``indices`` are sorted: positions by binary search
    covered, n_run = int(known.sum()), len(indices)
    how = "file paths ('paths')" if "paths" in arrays else "dataset index ('indices', else the position in 'scores')"
    if paths and "paths" not in arrays:
        how += "; in this image-folder dataset the index of a file is its place among the sorted files"
    if covered < 3 or (covered < n_run and not partial):
        raise DataError(
            f"scores: {path} covers {covered:,d} of this run's {n_run:,d} training samples "
            f"({100 * covered / max(n_run, 1):.1f}%); its keys are read as {how}; key it to this run's "
            "samples" + ("" if covered < 3 else ", or pass --partial to compare on the covered ones")
        )
    pos = np.searchsorted(indices, ext_idx[known])
    if "labels" in arrays and labels:
        theirs = arrays["labels"]
        if theirs.ndim != 1 or theirs.dtype.kind not in "iu" or len(theirs) != len(scores):
            raise DataError(f"scores: {path}: 'labels' must be 1-D integers, one per score")
        wrong = min(float((theirs[known].astype(np.int64) != mine[pos]).mean()) for mine in labels)
        if wrong > MAX_LABEL_MISMATCH:
            raise DataError(
                f"scores: {path}: its labels disagree with this run's on {100 * wrong:.1f}% of the "
                f"{covered:,d} matched samples: the file is keyed to other samples (another order of the "
                f"dataset?); its keys are read as {how}"
            )
    if np.ptp(scores[known]) == 0:
        raise DataError(f"scores: {path}: all {covered} scores of this run's samples are equal; nothing to rank")
    return pos, scores[known]


def run_labels(signals: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """The label arrays a score file's ``labels`` may match: the original ones and the given ones."""
    return (signals["clean_labels"], signals["labels"])


def within_class_spearman(score: np.ndarray, ext: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Spearman of ``score`` with ``ext`` inside each class (by given label), and its mean over the
    classes where both vary: is the ranking more than "which class is hard"?"""
    per_class: dict[str, float] = {}
    for c in np.unique(labels):
        m = labels == c
        if m.sum() >= 3 and np.ptp(score[m]) and np.ptp(ext[m]):
            per_class[str(int(c))] = float(spearmanr(score[m], ext[m]).statistic)
    mean = float(np.mean(list(per_class.values()))) if per_class else None
    return {"mean": mean, "per_class": per_class}


def compare_external(
    path: str | Path,
    signals: dict,
    score_map: dict[str, np.ndarray],
    out_dir: Path,
    paths: tuple[str, ...] = (),
    partial: bool = False,
) -> list[str]:
    """Spearman (overall and within class) of the external score with every memgate score, its AUROC
    for injected noise, and a figure: each score's mean percentile per decile of the external score."""
    pos, ext = read_external(path, signals["indices"], run_labels(signals), paths, partial)
    labels = signals["labels"][pos]
    # a memgate score constant over these samples (forgetting events of a short run) has no rank: None
    rho = {k: float(spearmanr(v[pos], ext).statistic) if np.ptp(v[pos]) else None for k, v in score_map.items()}
    within = {k: within_class_spearman(v[pos], ext, labels) for k, v in score_map.items()}
    result: dict = {"file": str(path), "n": len(pos), "spearman": rho, "spearman_within_class": within}
    noisy = signals["noisy"].astype(bool)[pos]
    lines = [f"  external scores {path}: {len(pos):,d} of {len(signals['indices']):,d} training samples"]
    if noisy.any() and not noisy.all():
        result["auroc_noisy"] = auroc(ext, noisy)
        lines.append(f"    its AUROC for the injected noisy labels: {result['auroc_noisy']:.3f}")
    ranked = sorted(rho.items(), key=lambda kv: -abs(kv[1]) if kv[1] is not None else 0.0)
    lines.append(f"    Spearman with {'':<24s} overall  within class (mean)")
    for k, r in ranked:
        w = within[k]["mean"]
        overall = f"{r:+.3f}" if r is not None else "- (constant here)"
        lines.append(f"    Spearman with {k:<24s} {overall:>7s}  " + (f"{w:+.3f}" if w is not None else "-"))
    write_json(out_dir / "external_scores.json", result)
    _plot_deciles(ext, {k: v[pos] for k, v in score_map.items() if k in FIGURE_SCORES}, out_dir, Path(path).name)
    return lines


def _plot_deciles(ext: np.ndarray, chosen: dict[str, np.ndarray], out_dir: Path, name: str) -> None:
    """external_scores.png: per decile of the external score, each memgate score's mean percentile
    rank against the external score's own; a score that ranks like the external one follows the
    diagonal. Tied external scores share a rank, so a mass of ties is one point, not empty deciles."""
    ext_pct = rankdata(ext) / len(ext) * 100
    decile = np.minimum(ext_pct // 10, 9)
    groups = [decile == d for d in np.unique(decile)]
    x = [ext_pct[g].mean() for g in groups]
    fig, ax = subplots(figsize=(6.4, 4.4))
    for k, v in chosen.items():
        pct = rankdata(v) / len(v) * 100
        ax.plot(x, [pct[g].mean() for g in groups], marker="o", label=k)
    ax.plot([0, 100], [0, 100], color="grey", linestyle=":", label="same ranking")
    ax.axhline(50, color="grey", linewidth=0.6)
    ax.set(xlabel=f"percentile of the external score ({name}), by decile", ylabel="mean percentile of the score")
    ax.set(xlim=(0, 100), ylim=(0, 100))
    ax.legend(fontsize=7)
    save(fig, out_dir / "external_scores.png", f"memgate scores against {name}", 10)
