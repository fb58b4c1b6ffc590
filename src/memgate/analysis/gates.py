"""Where the gate sends training samples: g over epochs (Figure 2), noisy vs clean, the hardest images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import load_config
from ..errors import MemgateError
from ..train.evaluate import hard_gate_line, run_dataset
from ..train.rundir import CONFIG, G_HIST_PNG, GATES, read_gates, read_summary
from .figures import colormap, image_grid, plain_log_labels, save, subplots

BINS = np.linspace(0.0, 1.0, 51)


def deepest_stage(gates: dict[str, np.ndarray]) -> int:
    return int(gates["stages"][-1])


def g_histograms(g_hist: np.ndarray, bins: np.ndarray = BINS) -> np.ndarray:
    """(epochs, N) g values -> (epochs, bins - 1) fraction of samples per g bin."""
    counts = np.stack([np.histogram(row.astype(np.float32), bins=bins)[0] for row in g_hist])
    return counts / max(1, g_hist.shape[1])


def noisy_vs_clean(gates: dict[str, np.ndarray], stage: int | None = None) -> dict[str, Any]:
    """Per epoch: mean g and fraction g > 0.5 of the noisy-label samples and of the clean ones."""
    g = gates[f"g_b{stage or deepest_stage(gates)}"].astype(np.float32)
    noisy = gates["noisy"].astype(bool)
    out: dict[str, Any] = {"n_noisy": int(noisy.sum()), "n_clean": int((~noisy).sum())}
    for name, mask in (("noisy", noisy), ("clean", ~noisy)):
        out[f"{name}_g_mean"] = g[:, mask].mean(1).tolist() if mask.any() else None
        out[f"{name}_frac_above_half"] = (g[:, mask] > 0.5).mean(1).tolist() if mask.any() else None
    return out


def plot_g_histograms(
    gates_path: str | Path,
    png: str | Path,
    stage: int | None = None,
    overlay_epochs: list[int] | None = None,
    title: str | None = None,
) -> Path:
    """Figure 2: the distribution of g over all training samples, epoch by epoch.

    Left: a heatmap (epoch x g, log colour) of the fraction of samples per bin. Right: overlaid
    histograms at a few epochs (1-based; default: first, last and three between).
    """

    from matplotlib.colors import LogNorm

    gates = read_gates(gates_path)
    stage = stage or deepest_stage(gates)
    g = gates[f"g_b{stage}"]
    hist = g_histograms(g)
    epochs = g.shape[0]
    if overlay_epochs is None:
        overlay_epochs = sorted({int(round(e)) for e in np.linspace(1, epochs, min(epochs, 5))})
    fig, (ax1, ax2) = subplots(1, 2, figsize=(12, 4.5))
    floor = 1.0 / max(1, g.shape[1])
    im = ax1.imshow(
        np.maximum(hist.T, floor),
        origin="lower",
        aspect="auto",
        cmap="viridis",
        extent=(0.5, epochs + 0.5, 0, 1),
        norm=LogNorm(vmin=floor, vmax=1),
    )
    ax1.axhline(0.5, color="white", lw=0.8, ls="--")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("g")
    ax1.set_title(f"g of all {g.shape[1]:,d} training samples (gate over B{stage})")
    bar = fig.colorbar(im, ax=ax1, label="fraction of samples")
    centers = (BINS[:-1] + BINS[1:]) / 2
    cmap = colormap("plasma")
    for i, e in enumerate(overlay_epochs):
        ax2.step(
            centers,
            hist[e - 1],
            where="mid",
            color=cmap(i / max(1, len(overlay_epochs) - 1) * 0.85),
            label=f"epoch {e}: {100 * (g[e - 1] > 0.5).mean():.1f}% > 0.5",
        )
    ax2.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax2.set_yscale("log")
    plain_log_labels(bar.ax.yaxis, ax2.yaxis)
    ax2.set_xlabel("g")
    ax2.set_ylabel("fraction of samples")
    ax2.set_title("histograms at chosen epochs")
    ax2.legend(fontsize=8)
    return save(fig, png, title)


def plot_top_g_images(
    images: np.ndarray,
    gates: dict[str, np.ndarray],
    classes: list[str],
    png: str | Path,
    count: int = 32,
    stage: int | None = None,
    run_name: str = "",
) -> Path:
    """The training images with the highest final g, titled with their (training) label;
    red titles mark labels that label noise changed ("true" label in brackets). ``run_name`` heads
    the title where the figure stands beside other runs' (a study's report)."""

    hist = gates[f"g_b{stage or deepest_stage(gates)}"].astype(np.float32)
    g, g_mean = hist[-1], hist.mean(0)
    # float16 g ties at its ceiling (0.982 for the released mapping) for many images: among equal
    # final g, the higher mean g over epochs ranks first, so the grid is not an arbitrary pick
    order = np.lexsort((-g_mean, -g))[:count]
    tied = int((g >= g[order[-1]]).sum()) > count
    titles, red = [], []
    for pos in order:
        label, noisy = classes[gates["labels"][pos]], bool(gates["noisy"][pos])
        true = f" [{classes[gates['clean_labels'][pos]]}]" if noisy else ""
        titles.append(f"{label}{true}\ng={g[pos]:.2f}")
        red.append(noisy)
    images = [images[gates["indices"][pos]] for pos in order]
    title = (f"{run_name}: " if run_name else "") + "training images with the highest final g"
    if gates["noisy"].any():  # the key only where the run has label noise
        title += " (red: noisy label, true label in brackets)"
    if tied:
        title += f"; {int((g >= g[order[-1]]).sum()):,d} tie at g >= {g[order[-1]]:.3f}, ranked by mean g over epochs"
    return image_grid(images, titles, red, png, title)


def plot_noisy_vs_clean(gates: dict[str, np.ndarray], png: str | Path, stage: int | None = None) -> Path:
    """Mean g and share of g > 0.5 per epoch, for noisy-label and clean training samples."""

    nv = noisy_vs_clean(gates, stage)
    fig, (ax1, ax2) = subplots(1, 2, figsize=(10, 3.8))
    for name, colour in (("clean", "tab:blue"), ("noisy", "tab:red")):
        if nv[f"{name}_g_mean"] is None:
            continue
        epochs = np.arange(1, len(nv[f"{name}_g_mean"]) + 1)
        label = f"{name} labels (n={nv[f'n_{name}']:,d})"
        ax1.plot(epochs, nv[f"{name}_g_mean"], color=colour, label=label)
        ax2.plot(epochs, 100 * np.array(nv[f"{name}_frac_above_half"]), color=colour, label=label)
    ax1.set(xlabel="epoch", ylabel="mean g", title="mean g of training samples", ylim=(0, 1))
    ax2.set(xlabel="epoch", ylabel="% with g > 0.5", title="samples routed mostly through the extra layers")
    ax1.legend(fontsize=8)
    return save(fig, png)


def per_class_g(gates: dict[str, np.ndarray], classes: list[str], stage: int | None = None) -> list[tuple[str, float]]:
    """Mean final-epoch g per (training) label, hardest class first."""
    g = gates[f"g_b{stage or deepest_stage(gates)}"][-1].astype(np.float32)
    labels = gates["labels"]
    rows = [(c, float(g[labels == i].mean())) for i, c in enumerate(classes) if (labels == i).any()]
    return sorted(rows, key=lambda r: -r[1])


def analyze_gates(run: Path, out_dir: Path) -> list[str]:
    """Figures and text lines on where a run's gate sends its training samples."""
    gates = read_gates(run)
    stage = deepest_stage(gates)
    g = gates[f"g_b{stage}"].astype(np.float32)
    lines = [f"{run}: gate over B{stage}, {g.shape[1]:,d} training samples, {g.shape[0]} epochs"]
    for e in sorted({0, g.shape[0] // 2, g.shape[0] - 1}):
        lines.append(f"  epoch {e + 1:>3d}: mean g {g[e].mean():.3f}, g > 0.5 for {100 * (g[e] > 0.5).mean():5.1f}%")
    nv = noisy_vs_clean(gates, stage)
    if nv["noisy_g_mean"] is not None:
        lines.append(
            f"  final epoch, noisy labels (n={nv['n_noisy']:,d}): mean g {nv['noisy_g_mean'][-1]:.3f}, "
            f"{100 * nv['noisy_frac_above_half'][-1]:.1f}% > 0.5; clean (n={nv['n_clean']:,d}): "
            f"mean g {nv['clean_g_mean'][-1]:.3f}, {100 * nv['clean_frac_above_half'][-1]:.1f}% > 0.5"
        )
        plot_noisy_vs_clean(gates, out_dir / "noisy_vs_clean.png", stage)
    plot_g_histograms(run / GATES, out_dir / G_HIST_PNG, stage)
    s = read_summary(run)
    if s is not None and f"test_g_b{stage}" in gates and len(gates["stages"]) == 1:  # one gate: one skip share
        skip = float((gates[f"test_g_b{stage}"].astype(np.float32) <= 0.5).mean())
        gate_input = load_config(run / CONFIG).gate.input
        lines.append(hard_gate_line(gate_input, skip, skip * s["macs_skippable"] / s["macs"]))
    lines += _image_lines(run, gates, stage, out_dir)
    lines.append(f"  figures in {out_dir}")
    return lines


def _image_lines(run: Path, gates: dict[str, np.ndarray], stage: int, out_dir: Path) -> list[str]:
    """The top-g image grid and the hardest classes, when the run's data can be found."""
    try:
        ds = run_dataset(run)
    except MemgateError as e:  # the images are optional: the statistics stand without them
        return [f"  (no image grid: {e})"]
    classes = list(ds.classes)
    plot_top_g_images(ds.x_train, gates, classes, out_dir / "top_g.png", stage=stage)
    ranked = per_class_g(gates, classes, stage)
    k = min(5, len(ranked) // 2)  # never the same class at both ends (3 classes: one each)
    if k == 0:
        return []
    return [
        "  hardest classes (mean final g): " + ", ".join(f"{c} {v:.2f}" for c, v in ranked[:k]),
        "  easiest classes: " + ", ".join(f"{c} {v:.2f}" for c, v in ranked[::-1][:k]),
    ]
