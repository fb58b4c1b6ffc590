"""Does g point at the samples that need the deep layers? (issue 36)

Three answers from one run's per-sample scores (``memgate scores --proxies``):

- **the Spearman matrix** of g with prediction depth, the memorisation proxies and the training
  dynamics, every pair over the training samples both cover (``spearman.png``);
- **mean g per prediction depth**: does g rise with the depth a sample needs (``g_by_depth.png``)?
- **routing by prediction depth against routing by g** with the hard gate on the test split: the
  images whose prediction depth is at most the gated stage's first unit "need no extra layers", so
  they skip them; the same share routed by lowest g, and at random (its exact expectation), give
  the accuracy each ranking buys. Prediction depth reads every layer of the full network, so it is a
  yardstick for g, not a router one could deploy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ..atomic import write_text
from ..config import stage_units
from ..markdown import table
from ..train.evaluate import SavedRun, predict
from .external import within_class_spearman
from .figures import save, subplots

SHORT = {  # the proxies of a train_scores.npz as the matrix names them
    "curvature": "curvature",
    "loss_sensitivity": "loss sensitivity",
    "el2n": "EL2N",
    "csl": "CSL",
    "neg_aum": "-AUM",
    "forgetting": "forgetting events",
}


def spearman_matrix(columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(Spearman of every pair of ``columns``, the number of samples of each pair): a column may hold
    NaN where it does not cover a sample (a held-out score of a subset); each pair uses the samples
    both cover, and a pair with a constant side is NaN."""
    names = list(columns)
    k = len(names)
    rho, count = np.full((k, k), np.nan), np.zeros((k, k), dtype=np.int64)
    for i in range(k):
        for j in range(i, k):
            a, b = columns[names[i]], columns[names[j]]
            both = np.isfinite(a) & np.isfinite(b)
            count[i, j] = count[j, i] = int(both.sum())
            if both.sum() > 2 and np.ptp(a[both]) > 0 and np.ptp(b[both]) > 0:
                rho[i, j] = rho[j, i] = spearmanr(a[both], b[both]).statistic
    return rho, count


def plot_spearman(names: list[str], rho: np.ndarray, png: Path, title: str) -> Path:
    """The matrix as a heatmap, each cell written out (blank where a pair has no rank)."""
    fig, ax = subplots(figsize=(1.0 * len(names) + 2.5, 0.8 * len(names) + 2))
    im = ax.imshow(rho, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            if np.isfinite(rho[i, j]):
                ink = "white" if abs(rho[i, j]) > 0.6 else "black"  # readable on the dark cells
                ax.text(j, i, f"{rho[i, j]:+.2f}", ha="center", va="center", fontsize=7, color=ink)
    fig.colorbar(im, ax=ax, shrink=0.8, label="Spearman")
    return save(fig, png, title, 9)


def g_by_depth(g: np.ndarray, depth: np.ndarray, layers: int) -> list[tuple[int, int, float, float]]:
    """Per prediction depth 0..``layers`` (``layers``: never settles): (depth, samples, mean g, its
    standard error); depths no sample has are left out."""
    rows = []
    for d in range(layers + 1):
        v = g[depth == d].astype(np.float64)
        if len(v):
            sem = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
            rows.append((d, len(v), float(v.mean()), sem))
    return rows


def plot_g_by_depth(
    by_set: dict[str, list[tuple[int, int, float, float]]], layers: int, first_unit: int, png: Path
) -> Path:
    """Mean g (± 1.96 standard errors) per prediction depth, one line per split, with the gated
    stage's first unit marked: left of it the samples that need no extra layers."""
    fig, ax = subplots(figsize=(7, 4))
    for name, rows in by_set.items():
        d, n, m, se = (np.array(c, dtype=np.float64) for c in zip(*rows))
        ax.errorbar(d, m, yerr=1.96 * np.nan_to_num(se), marker="o", capsize=3, label=f"{name} ({int(n.sum()):,d})")
    ax.axvline(first_unit + 0.5, color="grey", ls="--", lw=1)
    ax.text(first_unit + 0.6, ax.get_ylim()[0], " needs the extra layers ->", fontsize=8, va="bottom")
    ax.set_xticks(range(layers + 1), [*map(str, range(layers)), "never"])
    ax.set_xlabel("prediction depth (0 = stem, then the units; never: the probes never settle)")
    ax.set_ylabel("mean g")
    ax.legend(fontsize=8)
    return save(fig, png, "mean g per prediction depth", 10)


def routing_rows(
    full_correct: np.ndarray, skip_correct: np.ndarray, depth: np.ndarray, g: np.ndarray, first_unit: int
) -> list[list[str]]:
    """Test accuracy when the images whose prediction depth is at most ``first_unit`` skip the gated
    stage's extra layers, against skipping the same number of lowest-g images, and random images (the
    exact expectation over random subsets of that size); with no image and every image skipping."""
    n = len(depth)
    shallow = depth <= first_unit
    k = int(shallow.sum())
    by_g = np.zeros(n, dtype=bool)
    by_g[np.argsort(g, kind="stable")[:k]] = True

    def acc(skip: np.ndarray) -> float:
        return 100 * float(np.where(skip, skip_correct, full_correct).mean())

    random = 100 * (k / n * skip_correct.mean() + (1 - k / n) * full_correct.mean())
    share = f"{100 * k / n:.1f}%"
    return [
        ["none (the full network)", "0.0%", f"{acc(np.zeros(n, bool)):.2f}"],
        [f"prediction depth <= {first_unit} (needs no extra layers)", share, f"{acc(shallow):.2f}"],
        ["lowest g, the same number", share, f"{acc(by_g):.2f}"],
        ["random, the same number (expectation)", share, f"{random:.2f}"],
        ["every image", "100.0%", f"{acc(np.ones(n, bool)):.2f}"],
    ]


def depth_report(
    columns: dict[str, np.ndarray],
    g: dict[str, np.ndarray],
    depth: dict[str, np.ndarray],
    layers: int,
    first_unit: int,
    routing: list[list[str]],
    labels: np.ndarray,
    out_dir: Path,
) -> str:
    """proxies.md, spearman.png and g_by_depth.png in ``out_dir``; returns proxies.md's text. The first
    of ``columns`` is g; ``labels`` (the training samples') split the within-class Spearman."""
    rho, count = spearman_matrix(columns)
    names = list(columns)
    gname, gcol = names[0], columns[names[0]]
    plot_spearman(names, rho, out_dir / "spearman.png", "Spearman between the per-sample scores (training samples)")
    by_set = {name: g_by_depth(g[name], depth[name], layers) for name in g}
    plot_g_by_depth(by_set, layers, first_unit, out_dir / "g_by_depth.png")
    lines = ["# g against prediction depth and the memorisation proxies", "", "## Spearman (training samples)", ""]
    rows = [
        [a, *[f"{rho[i, j]:+.3f}" if np.isfinite(rho[i, j]) else "-" for j in range(len(names))]]
        for i, a in enumerate(names)
    ]
    lines += table(["", *names], rows)
    partial = [f"{a} ({count[i, i]:,d})" for i, a in enumerate(names) if count[i, i] < count.max()]
    if partial:
        lines += ["", "Pairs with a score covering only some samples use those samples: " + ", ".join(partial) + "."]
    lines += ["", f"## Spearman with {gname}: over all samples and within each class", ""]
    within = []
    for j, name in enumerate(names[1:], 1):
        both = np.isfinite(columns[name])
        w = within_class_spearman(gcol[both], columns[name][both], labels[both])
        ranged = list(w["per_class"].values())
        span = f"{min(ranged):+.3f} .. {max(ranged):+.3f}" if ranged else "-"
        mean = f"{w['mean']:+.3f}" if w["mean"] is not None else "-"
        within.append([name, f"{rho[0, j]:+.3f}" if np.isfinite(rho[0, j]) else "-", mean, span])
    lines += table(["score", "all samples", "within class (mean)", "within class (range)"], within)
    for name, rows_ in by_set.items():
        lines += ["", f"## Mean g per prediction depth ({name})", ""]
        lines += table(
            ["prediction depth", "samples", "mean g", "standard error"],
            [[d, f"{n:,d}", f"{m:.3f}", f"{s:.3f}"] for d, n, m, s in rows_],
        )
    lines += ["", f"## Hard gate on the test split: which images skip the extra layers (units after {first_unit})", ""]
    lines += table(["images routed to skip", "share", "test accuracy (%)"], routing)
    return "\n".join(lines + [""])


def depth_study(
    r: SavedRun,
    train: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
    external: dict[str, tuple[np.ndarray, np.ndarray]],
    out_dir: Path,
) -> list[str]:
    """The study of one run from its scores (``train``/``test``: the arrays of train_scores.npz and
    test_scores.npz, with the proxies and the training passes' histories; ``external``: name ->
    (positions in ``train``, scores))."""
    stage, n = max(r.cfg.model.gates), stage_units(r.cfg.model)
    layers, first_unit = 3 * n + 1, 1 + (stage - 1) * n  # probes: stem, then 3n units; B<s>'s first unit
    key = f"g_b{stage}"
    columns = {f"g (B{stage})": train[key], "prediction depth": train["prediction_depth"]}
    columns.update({name: train[k] for k, name in SHORT.items() if k in train})
    columns["loss (final)"] = train["loss"]
    for name, (pos, v) in external.items():
        col = np.full(len(train["indices"]), np.nan)
        col[pos] = v
        columns[name] = col
    columns = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    x_test = r.dataset.x_test
    correct = {m: (predict(r, x_test, g_mode=m).logits.argmax(1).numpy() == test["labels"]) for m in ("full", "skip")}
    routing = routing_rows(
        correct["full"], correct["skip"], test["prediction_depth"], test[key].astype(np.float64), first_unit
    )
    g = {"train": train[key], "test": test[key]}
    depth = {"train": train["prediction_depth"], "test": test["prediction_depth"]}
    text = depth_report(columns, g, depth, layers, first_unit, routing, train["labels"], out_dir)
    write_text(out_dir / "proxies.md", text)
    return [f"  proxies.md, spearman.png, g_by_depth.png: g against prediction depth and the proxies, in {out_dir}"]
