"""`memgate agreement FILE FILE [...] -o OUT.md`: how reproducible each per-sample score is across runs.

Two trainings that differ only by their seed see the same images; a score that says which images a
network finds hard or memorises should rank them alike in both. For each score every file holds
(the ``train_scores.npz`` / ``test_scores.npz`` of `memgate scores`, or any .npz of 1-D scores keyed
by dataset index, ``indices``), over every pair of files: Spearman over all samples and within each
class (mean over the classes), and the overlap of the hardest q%: the share of one file's top q%
that the other's top q% also holds (chance: q). Scores are turned so that high means hard (the
margin and the max softmax are negated), and a tied group at the cut counts pro rata, which is what
a random tie-break gives on average (float16 g and integer forgetting counts tie often).

A score's agreement with itself across seeds is also the most another run's score can be expected
to agree with it: g that agrees less with its own next seed than with a baseline's -AUM ranks the
same images, only with more noise.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from ..atomic import write_json, write_text
from ..data.npz import read_user_arrays
from ..errors import DataError, RunError
from ..markdown import table
from ..parsing import loads_json
from .external import MAX_LABEL_MISMATCH, within_class_spearman
from .figures import save, subplots

NOT_SCORES = ("indices", "labels", "correct")  # the keys, the labels, the network's own call
LOW_IS_HARD = ("margin", "max_softmax")  # negated so that high = hard, as every other score
FIX = "give the train_scores.npz or test_scores.npz files that `memgate scores` wrote"


def _read(path: Path) -> dict[str, np.ndarray]:
    arrays = read_user_arrays(path, "agreement", FIX)
    if "" in arrays:
        raise DataError(f"agreement: {path} is a plain .npy array, not an .npz of named scores; {FIX}")
    idx = arrays.get("indices")
    if idx is None:
        raise DataError(f"agreement: {path} has no 'indices' (dataset index of each row); {FIX}")
    if idx.ndim != 1 or idx.dtype.kind not in "iu" or len(np.unique(idx)) != len(idx):
        raise DataError(f"agreement: {path}: 'indices' must be 1-D distinct integers, one per sample")
    lab = arrays.get("labels")
    if lab is not None and (lab.ndim != 1 or lab.dtype.kind not in "iu"):
        raise DataError(
            f"agreement: {path}: 'labels' must be 1-D integers, one per sample (it is {lab.dtype} {lab.shape})"
        )
    for key, v in arrays.items():
        if key != "indices" and v.shape[:1] != idx.shape:
            raise DataError(f"agreement: {path}: '{key}' has {v.shape[:1]} rows for {len(idx):,d} indices")
    return arrays


def _aligned(files: list[Path], partial: bool) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """Every file's arrays, rows reordered to the dataset indices they share (all of them, or with
    ``partial`` the common ones); labels where two files both hold them must agree."""
    read = [_read(f) for f in files]
    common = read[0]["indices"]
    for f, a in zip(files[1:], read[1:], strict=True):
        shared = np.intersect1d(common, a["indices"])
        if not partial and (len(shared) != len(common) or len(shared) != len(a["indices"])):
            raise DataError(
                f"agreement: {f} holds {len(a['indices']):,d} samples, {len(shared):,d} of them in {files[0]} "
                f"({len(read[0]['indices']):,d}): the files are keyed to other samples; compare the same split "
                "of the same dataset, or pass --partial to compare on the samples they share"
            )
        common = shared
    if len(common) < 3:
        raise DataError(f"agreement: the files share {len(common)} samples; nothing to rank")
    out = []
    for a in read:
        order = np.argsort(a["indices"])
        rows = order[np.searchsorted(a["indices"], common, sorter=order)]
        out.append({k: v[rows] for k, v in a.items()})
    labelled = [(f, a["labels"].astype(np.int64)) for f, a in zip(files, out, strict=True) if "labels" in a]
    for f, lab in labelled[1:]:
        wrong = float((lab != labelled[0][1]).mean())
        if wrong > MAX_LABEL_MISMATCH:
            raise DataError(
                f"agreement: {f}'s labels disagree with {labelled[0][0]}'s on {100 * wrong:.1f}% of the samples: "
                "keyed to other samples, or runs given other (noisy) labels; compare runs of the same labels"
            )
    return out, common


def top_membership(score: np.ndarray, k: int) -> np.ndarray:
    """Per sample, the chance it is among the ``k`` highest under a random tie-break: 1 above the
    cut, 0 below, and for the tied group at the cut the share of its places left."""
    cut = np.sort(score)[::-1][k - 1]
    above, tied = score > cut, score == cut
    p = above.astype(np.float64)
    p[tied] = (k - above.sum()) / tied.sum()
    return p


def top_overlap(a: np.ndarray, b: np.ndarray, share: float) -> float:
    """Expected share of ``a``'s top ``share`` of samples that ``b``'s top ``share`` also holds."""
    k = max(1, round(share * len(a)))
    return float((top_membership(a, k) * top_membership(b, k)).sum() / k)


def _pair(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None, shares: tuple[float, ...]) -> dict[str, Any]:
    if not (np.ptp(a) and np.ptp(b)):
        return {"spearman": None, "within_class": None, "top": {}}  # a constant score has no rank
    within = within_class_spearman(a, b, labels)["mean"] if labels is not None else None
    return {
        "spearman": float(spearmanr(a, b).statistic),
        "within_class": within,
        "top": {f"{100 * q:g}": top_overlap(a, b, q) for q in shares},
    }


def _names(files: list[Path]) -> list[str]:
    """Each file's name in the tables: its folder's name where those differ, else its path."""
    parents = [f.parent.name for f in files]
    return parents if len(set(parents)) == len(files) and all(parents) else [str(f) for f in files]


def agreement(files: list[str | Path], shares: tuple[float, ...] = (0.01, 0.1), partial: bool = False) -> dict:
    """Seed-to-seed agreement of every score the ``files`` all hold (module docstring), per pair."""
    paths = [Path(f) for f in files]
    if len(paths) < 2:
        raise DataError("agreement: give at least two score files (e.g. seed 0's and seed 1's train_scores.npz)")
    if len({p.resolve() for p in paths}) != len(paths):
        raise DataError("agreement: a file is given twice; give each run's file once")
    arrays, common = _aligned(paths, partial)
    keys = [k for k in arrays[0] if k not in NOT_SCORES and all(k in a for a in arrays)]
    keys = [k for k in keys if all(a[k].ndim == 1 and a[k].dtype.kind in "biuf" for a in arrays)]
    if not keys:
        raise DataError(f"agreement: the files hold no score in common (1-D numbers besides {NOT_SCORES}); {FIX}")
    labels = arrays[0]["labels"].astype(np.int64) if "labels" in arrays[0] else None
    names = _names(paths)
    scores: dict[str, list[dict[str, Any]]] = {}
    for key in keys:
        sign = -1.0 if key in LOW_IS_HARD else 1.0
        turned = [sign * a[key].astype(np.float64) for a in arrays]
        if not all(np.isfinite(t).all() for t in turned):
            raise DataError(f"agreement: '{key}' holds a non-finite value in one of the files; {FIX}")
        scores[key] = [
            {"a": names[i], "b": names[j], **_pair(turned[i], turned[j], labels, shares)}
            for i, j in combinations(range(len(paths)), 2)
        ]
    skipped = sorted({k for a in arrays for k in a} - set(keys) - set(NOT_SCORES))
    return {
        "files": [str(p) for p in paths],
        "names": names,
        "samples": len(common),
        "top_percent": [100 * q for q in shares],
        "scores": scores,
        "not_in_every_file": skipped,
    }


def _span(values: list[float | None], fmt: str) -> str:
    """Mean over the pairs, with their range where there are several."""
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    mean = format(float(np.mean(v)), fmt)
    return mean if len(v) == 1 else f"{mean} ({format(min(v), fmt)} .. {format(max(v), fmt)})"


def agreement_markdown(result: dict) -> str:
    """The table: one row per score, best-agreeing first."""
    pairs = len(next(iter(result["scores"].values())))
    tops = [f"{q:g}" for q in result["top_percent"]]
    head = ["score", "Spearman", "within class (mean)"] + [f"top {q}% overlap (chance {q}%)" for q in tops]

    def mean_rho(item: tuple[str, list[dict]]) -> float:
        v = [p["spearman"] for p in item[1] if p["spearman"] is not None]
        return -float(np.mean(v)) if v else np.inf

    rows = []
    for key, ps in sorted(result["scores"].items(), key=mean_rho):
        cells = [_span([p["spearman"] for p in ps], "+.3f"), _span([p["within_class"] for p in ps], "+.3f")]
        cells += [_span([100 * p["top"][q] if q in p["top"] else None for p in ps], ".1f") for q in tops]
        rows.append([f"{key} (negated)" if key in LOW_IS_HARD else key, *cells])
    text = [
        f"# Agreement of per-sample scores across runs ({result['samples']:,d} samples, {len(result['names'])} "
        f"files, {pairs} pair{'s' * (pairs > 1)})",
        "",
        "Files: "
        + ", ".join(f"`{n}`" for n in result["names"])
        + ". Each cell: the mean over the pairs of files"
        + (" (their range)" if pairs > 1 else "")
        + "; high = hard for every score (margin and max softmax negated); top q% overlap: the share of one file's "
        "hardest q% that the other's hardest q% holds, tied scores at the cut shared pro rata.",
        "",
        *table(head, rows),
    ]
    if result["not_in_every_file"]:
        text += ["", "Not in every file, so not compared: " + ", ".join(result["not_in_every_file"]) + "."]
    return "\n".join(text) + "\n"


def _plot(result: dict, png: Path) -> None:
    """agreement.png: each score's seed-to-seed Spearman (mean over pairs, bars from min to max)."""
    rows = [(k, [p["spearman"] for p in ps if p["spearman"] is not None]) for k, ps in result["scores"].items()]
    rows = sorted((r for r in rows if r[1]), key=lambda r: np.mean(r[1]))
    fig, ax = subplots(figsize=(6.4, max(2.6, 1.2 + 0.32 * len(rows))))
    means = [float(np.mean(v)) for _, v in rows]
    lo = [m - min(v) for m, (_, v) in zip(means, rows, strict=True)]
    hi = [max(v) - m for m, (_, v) in zip(means, rows, strict=True)]
    colours = ["tab:orange" if k.startswith("g_") else "tab:blue" for k, _ in rows]  # the gate's g stands out
    ax.barh([k for k, _ in rows], means, xerr=[lo, hi] if max(lo + hi) > 0 else None, color=colours, capsize=2)
    ax.set(xlabel="Spearman between files (mean over pairs; bars: range)", xlim=(min(0.0, *means), 1))
    save(fig, png, f"agreement across {len(result['names'])} files, {result['samples']:,d} samples", 10)


def write_agreement(
    files: list[str | Path],
    out: str | Path,
    shares: tuple[float, ...] = (0.01, 0.1),
    partial: bool = False,
    force: bool = False,
) -> str:
    """``agreement`` into OUT.md, OUT.json and OUT.png; an OUT.json of other files is kept unless
    ``force``. Returns the table."""
    md = Path(out)
    if md.suffix != ".md":
        raise RunError(f"agreement: -o {out} must name the .md file to write (OUT.json and OUT.png go beside it)")
    result = agreement(files, shares, partial)
    js = md.with_suffix(".json")
    if js.exists() and not force:
        try:
            before = loads_json(js.read_text()).get("files")
        except (OSError, ValueError, AttributeError):
            before = None
        if before != result["files"]:
            raise RunError(f"agreement: {js} holds the agreement of other files; choose another -o, or --force")
    try:
        md.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"agreement: cannot create {md.parent} ({e.strerror}); choose a writable folder") from None
    text = agreement_markdown(result)
    write_json(js, result)
    _plot(result, md.with_suffix(".png"))
    write_text(md, text)
    return text
