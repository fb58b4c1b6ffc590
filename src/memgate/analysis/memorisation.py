"""What a network memorises, read from the signals its training passes recorded (signals.npz).

- Fit by noise: per epoch, the training accuracy for the *given* label on the samples whose label
  was corrupted (the memorised share: wrong labels fitted) and on the clean ones; the epochs at
  which the memorised share first reaches 50% and 90%.
- The data map of dataset cartography (Swayamdipta et al. 2020): per training sample, confidence =
  mean over epochs of p(given label), variability = its (population) std over epochs, correctness
  = share of epochs classified as labelled. p comes from the training pass (augmented images, the
  network as it was during the epoch), as the paper's own implementation logs it; p = exp(-loss).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..train.rundir import SIGNALS, present, read_metrics, read_run_arrays, read_signals
from .figures import save, subplots

MEMORISED_SHARES = (0.5, 0.9)


def fit_by_noise(correct: np.ndarray, noisy: np.ndarray) -> dict[str, np.ndarray]:
    """Training accuracy for the given label, per epoch (rows of ``correct``, epochs x N, or one row),
    on the noisy and on the clean samples; NaN for a group with no sample."""
    c = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    noisy = np.asarray(noisy, dtype=bool)

    def mean(mask: np.ndarray) -> np.ndarray:
        return c[:, mask].mean(1) if mask.any() else np.full(len(c), np.nan)

    return {"train_acc_noisy": mean(noisy), "train_acc_clean": mean(~noisy)}


def crossing_epochs(memorised: list[float | None] | np.ndarray) -> dict[str, int | None]:
    """The first 1-based epoch at which the memorised share reaches each of ``MEMORISED_SHARES``."""
    out: dict[str, int | None] = {}
    for share in MEMORISED_SHARES:
        hit = [i + 1 for i, m in enumerate(memorised) if m is not None and np.isfinite(m) and m >= share]
        out[f"memorised_{int(100 * share)}_epoch"] = hit[0] if hit else None
    return out


def data_map(loss: np.ndarray, correct: np.ndarray) -> dict[str, np.ndarray]:
    """Cartography's coordinates per sample from the epochs x N loss and correctness histories."""
    p = np.exp(-np.asarray(loss, dtype=np.float64))
    return {
        "confidence": p.mean(0),
        "variability": p.std(0),
        "correctness": np.asarray(correct, dtype=np.float64).mean(0),
    }


def plot_data_map(dm: dict[str, np.ndarray], noisy: np.ndarray, g: np.ndarray | None, png: Path, title: str) -> None:
    """Variability (x) against confidence (y): coloured by correctness, by noisy/clean, and by the
    final g when the run has a gate."""
    panels = ["correctness", "noisy"] + (["g"] if g is not None else [])
    fig, axes = subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8), squeeze=False)
    x, y = dm["variability"], dm["confidence"]
    order = np.argsort(noisy, kind="stable")  # noisy samples drawn last, on top
    for ax, panel in zip(axes[0], panels):
        if panel == "noisy":
            ax.scatter(x[~noisy], y[~noisy], s=2, c="tab:blue", alpha=0.35, label=f"clean ({int((~noisy).sum()):,d})")
            ax.scatter(x[noisy], y[noisy], s=2, c="tab:red", alpha=0.6, label=f"noisy label ({int(noisy.sum()):,d})")
            ax.legend(fontsize=8, markerscale=4, loc="lower right")
        else:
            colour = dm["correctness"] if panel == "correctness" else g
            sc = ax.scatter(x[order], y[order], s=2, c=colour[order], cmap="viridis", vmin=0, vmax=1, alpha=0.6)
            fig.colorbar(sc, ax=ax, label="correctness" if panel == "correctness" else "final g")
        ax.set(xlabel="variability (std of p(label) over epochs)", ylabel="confidence (mean p(label))")
        ax.set_xlim(0, max(0.5, float(x.max()) * 1.02))
        ax.set_ylim(0, 1)
        ax.set_title(f"coloured by {panel}", fontsize=10)
    save(fig, png, title, 10)


def analyze_memorisation(run: Path, out_dir: Path) -> list[str]:
    """data_map.png, and how many wrong labels the run fitted when (lines to print)."""
    signals, gates = read_run_arrays(run)
    noisy = signals["noisy"].astype(bool)
    dm = data_map(signals["loss"], signals["correct"])
    g = gates[f"g_b{gates['stages'][-1]}"][-1].astype(np.float32) if gates is not None else None
    title = f"data map of {run} ({len(noisy):,d} training samples, {len(signals['loss'])} epochs)"
    plot_data_map(dm, noisy, g, out_dir / "data_map.png", title)
    lines = [f"  data map (cartography): {out_dir / 'data_map.png'}"]
    if noisy.any():
        fit = fit_by_noise(signals["correct"], noisy)
        mem = fit["train_acc_noisy"]
        cross = crossing_epochs(mem)
        when = ", ".join(
            f"{int(100 * s)}% at epoch {cross[f'memorised_{int(100 * s)}_epoch'] or '-'}" for s in MEMORISED_SHARES
        )
        lines.append(
            f"  wrong labels fitted: {100 * mem[-1]:.1f}% of {int(noisy.sum()):,d} at the end ({when}); "
            f"clean samples fitted {100 * fit['train_acc_clean'][-1]:.1f}%"
        )
    return lines


def run_fit(run: Path) -> dict[str, np.ndarray] | None:
    """Per-epoch training accuracy on a run's noisy and clean samples: from metrics.jsonl, or from
    signals.npz for a run trained before memgate logged it; None for a run without injected noise."""
    rows = read_metrics(run)
    if rows and rows[-1].get("train_acc_noisy") is not None:
        return {k: np.array([r[k] for r in rows], dtype=np.float64) for k in ("train_acc_noisy", "train_acc_clean")}
    if not present(Path(run), SIGNALS):
        return None
    signals = read_signals(run)
    noisy = signals["noisy"].astype(bool)
    return fit_by_noise(signals["correct"], noisy) if noisy.any() else None
