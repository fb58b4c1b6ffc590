"""Looking inside a run: g over epochs (Figure 2), noisy vs clean samples, the hardest images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

BINS = np.linspace(0.0, 1.0, 51)


def load_gates(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if path.is_dir():
        path = path / "gates.npz"
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    gates = load_gates(gates_path)
    stage = stage or deepest_stage(gates)
    g = gates[f"g_b{stage}"]
    hist = g_histograms(g)
    epochs = g.shape[0]
    if overlay_epochs is None:
        overlay_epochs = sorted({int(round(e)) for e in np.linspace(1, epochs, min(epochs, 5))})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
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
    fig.colorbar(im, ax=ax1, label="fraction of samples")
    centers = (BINS[:-1] + BINS[1:]) / 2
    cmap = plt.get_cmap("plasma")
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
    ax2.set_xlabel("g")
    ax2.set_ylabel("fraction of samples")
    ax2.set_title("histograms at chosen epochs")
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def plot_top_g_images(
    images: np.ndarray,
    gates: dict[str, np.ndarray],
    classes: list[str],
    png: str | Path,
    count: int = 32,
    stage: int | None = None,
) -> Path:
    """The training images with the highest final g, titled with their (training) label;
    red titles mark labels that label noise changed ("true" label in brackets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = gates[f"g_b{stage or deepest_stage(gates)}"][-1].astype(np.float32)
    order = np.argsort(-g, kind="stable")[:count]
    cols = 8
    rows = int(np.ceil(len(order) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5, rows * 1.75))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, pos in zip(np.atleast_1d(axes).ravel(), order):
        ax.imshow(images[gates["indices"][pos]])
        label = classes[gates["labels"][pos]]
        noisy = bool(gates["noisy"][pos])
        text = (
            f"{label}\ng={g[pos]:.2f}"
            if not noisy
            else f"{label} [{classes[gates['clean_labels'][pos]]}]\ng={g[pos]:.2f}"
        )
        ax.set_title(text, fontsize=7, color="red" if noisy else "black")
    fig.suptitle("training images with the highest final g (red: noisy label, true label in brackets)", fontsize=9)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
