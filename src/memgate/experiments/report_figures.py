"""The figures and figure tables of `memgate report`: learning curves over seeds, Figure 2 of each
gated run and its statement in numbers, the top-g images of the first."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.figures import colormap, save, subplots
from ..analysis.gates import plot_g_histograms, plot_top_g_images
from ..analysis.memorisation import run_fit
from ..errors import MemgateError
from ..markdown import table
from ..train.evaluate import run_dataset
from ..train.rundir import GATES, present, read_gates, read_metrics
from .grid import baseline_of


def figure2_numbers(meta: dict[str, Any], results: dict[str, list[dict]]) -> list[str]:
    """Figure 2's statement in numbers, per gated run: the share of training images with g > 0.5 and
    the mean g at the first and at the last epoch (metrics.jsonl)."""
    rows = []
    for v in meta["variants"]:
        for r in results.get(v["name"], []):
            m = [row for row in read_metrics(r["run"]) if row.get("g_mean") is not None]
            if m:
                first, last = m[0], m[-1]
                rows.append(
                    [
                        v["name"],
                        str(r["seed"]),
                        f"{100 * first['frac_g_above_half']:.1f}",
                        f"{100 * last['frac_g_above_half']:.1f} (epoch {last['epoch']})",
                        f"{first['g_mean']:.3f}",
                        f"{last['g_mean']:.3f}",
                    ]
                )
    if not rows:
        return []
    head = ["variant", "seed", "g > 0.5, epoch 1 (%)", "g > 0.5, last epoch (%)", "mean g, epoch 1", "mean g, last"]
    return [
        "## Figure 2 in numbers",
        "",
        "The share of the training images with g > 0.5 (the paper: most images start high and end low) and "
        "the mean g, at the first and the last epoch of every gated run (metrics.jsonl).",
        "",
        *table(head, rows),
        "",
    ]


def pairs_by_epoch(meta: dict[str, Any], results: dict[str, list[dict]]) -> list[str]:
    """Each same-seed pair: its final gap in test accuracy, and epoch by epoch (metrics.jsonl) in how
    many of the epochs both runs were tested the variant's test accuracy is below its baseline's, and
    in how many of all their common epochs its training loss is above; whether a final gap is a
    last-epoch accident or held all along."""
    rows = []
    for v in meta["variants"]:
        base_name = baseline_of(meta, v)
        base = {r["seed"]: r for r in results.get(base_name, [])} if base_name and base_name != v["name"] else {}
        for r in results.get(v["name"], []):
            if r["seed"] not in base:
                continue
            pairs = list(zip(read_metrics(r["run"]), read_metrics(base[r["seed"]]["run"])))
            tested = [(a["test_acc"], b["test_acc"]) for a, b in pairs if None not in (a["test_acc"], b["test_acc"])]
            below = sum(a < b for a, b in tested)
            above = sum(a["train_loss"] > b["train_loss"] for a, b in pairs)
            gap = 100 * (r["final_test_acc"] - base[r["seed"]]["final_test_acc"])
            rows.append(
                [v["name"], str(r["seed"]), f"{gap:+.2f}", f"{below} of {len(tested)}", f"{above} of {len(pairs)}"]
            )
    if not rows:
        return []
    head = [
        "variant",
        "seed",
        "final test acc minus the baseline's (points)",
        "epochs with test acc below the baseline's",
        "epochs with training loss above",
    ]
    return [
        "## Same-seed pairs, epoch by epoch",
        "",
        "Each variant against the same seed's baseline: the final gap, and every epoch both ran (metrics.jsonl; "
        "ties count as neither): a final gap that held for most of the schedule is not an accident of the last "
        "epoch.",
        "",
        *table(head, rows),
        "",
    ]


def draw_figures(meta: dict[str, Any], results: dict[str, list[dict]], out_dir: Path) -> list[str]:
    names = [_curves(meta, results, out_dir / "curves.png")]
    # Figure 2 and the top-g images of every gated run that still has gates.npz, named by its variant
    # and seed: a run packed without it (a study's finished runs, kept slim) draws nothing, and its
    # earlier figures, left in place, are listed with the others
    for v in meta["variants"]:
        for run in results.get(v["name"], []):
            fig2, top = (f"{kind}_{v['name']}_seed{run['seed']}.png" for kind in ("fig2", "top_g"))
            if present(Path(run["run"]), GATES):
                _gated_figures(run, f"{v['name']}, seed {run['seed']}", out_dir / fig2, out_dir / top)
            names += [png for png in (fig2, top) if (out_dir / png).exists()]
    return names


def _gated_figures(run: dict, name: str, fig2: Path, top: Path) -> None:
    """Figure 2 of a gated run and its training images with the highest final g."""
    plot_g_histograms(Path(run["run"]) / GATES, fig2, title=f"{name}: g of the training samples over epochs (Figure 2)")
    try:
        ds = run_dataset(run["run"])
        plot_top_g_images(ds.x_train, read_gates(run["run"]), list(ds.classes), top, run_name=name)
    except MemgateError as e:
        print(f"report: no top-g image grid for {name} ({e})", file=sys.stderr)


CURVES = (  # metrics.jsonl key, axis label, scale: the learning curves of every variant
    ("test_acc", "test accuracy (%)", 100),
    ("train_loss", "training loss", 1),
    ("g_mean", "mean g (training samples)", 1),
    ("gate_acc", "gate head accuracy, training (%)", 100),
)


def _curves(meta: dict[str, Any], results: dict[str, list[dict]], png: Path) -> str:
    """Learning curves per epoch, mean and std over seeds, one line per variant: test accuracy,
    training loss, mean g and the gate head's accuracy (gated variants); for a grid with injected label
    noise, also the share of the wrong labels each variant has fitted per epoch."""
    fits = {
        v["name"]: [f for r in results.get(v["name"], []) if (f := run_fit(Path(r["run"])))] for v in meta["variants"]
    }
    noisy = any(fits.values())
    n_panels = len(CURVES) + noisy
    fig, axes = subplots(2, (n_panels + 1) // 2, figsize=(7 * ((n_panels + 1) // 2), 9), squeeze=False)
    panels = list(axes.flat)
    palette = colormap("tab10").colors
    for i, v in enumerate(meta["variants"]):
        colour = palette[i % len(palette)]  # one colour per variant in every panel
        metrics = [read_metrics(r["run"]) for r in results.get(v["name"], [])]
        for ax, (key, _, scale) in zip(panels, CURVES):
            rows = [[m for m in ms if m.get(key) is not None] for ms in metrics]
            if rows and all(rows):
                x = [[m["epoch"] for m in rs] for rs in rows]
                mean_std(ax, x, [[m[key] for m in rs] for rs in rows], v["name"], scale, colour)
        if noisy and fits[v["name"]]:
            mem = [f["train_acc_noisy"] for f in fits[v["name"]]]
            mean_std(panels[len(CURVES)], [list(range(1, len(m) + 1)) for m in mem], mem, v["name"], 100, colour)
    for ax, (_, label, _) in zip(panels, CURVES):
        ax.set(xlabel="epoch", ylabel=label, title=f"{label}: mean, std over seeds")
    if noisy:
        panels[len(CURVES)].set(
            xlabel="epoch",
            ylabel="wrong labels fitted (%)",
            ylim=(0, 100),
            title="memorised: training accuracy on the noisy samples, for their given label",
        )
    for ax in panels[n_panels:]:
        ax.set_visible(False)
    for ax in panels[:n_panels]:
        ax.title.set_fontsize(10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    save(fig, png, meta.get("title", meta["name"]), 10)
    return png.name


def mean_std(
    ax: Any, epochs: list[list[int]], curves: list[list[float]], name: str, scale: float = 100, color: Any = None
) -> None:
    """One variant's curve over seeds (times ``scale``): the mean, and the std band when there are
    several; a curve of one or two points is drawn as markers, so that a single epoch shows."""
    n = min(len(c) for c in curves)
    arr = scale * np.array([c[:n] for c in curves], dtype=np.float64)
    x, mean = epochs[0][:n], arr.mean(0)
    (line,) = ax.plot(x, mean, marker="o" if n <= 2 else None, color=color, label=f"{name} (n={len(curves)})")
    if len(curves) > 1:
        sd = arr.std(0, ddof=1)
        ax.fill_between(x, mean - sd, mean + sd, alpha=0.2, color=line.get_color())
