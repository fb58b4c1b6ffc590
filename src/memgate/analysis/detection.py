"""Does g find the noisy labels? Every per-sample score of a run against the injected-noise mask.

Scores (higher = more suspicious) come from the training passes themselves (signals.npz, gates.npz):
g (final and mean over epochs), the final classifier's loss (final, mean: the small-loss rule of
Co-teaching / DivideMix), -AUM (Pleiss et al. 2020: minus the mean margin), forgetting events and
the first epoch learned for good (Toneva et al. 2019), dataset cartography's confidence (negated) and
variability over epochs of p(given label) (Swayamdipta et al. 2020), each gate classifier's entropy (what g is made
of) and its loss on the given label (the label-aware twin of g), and cleanlab's label-quality score
on the stored softmax when the optional cleanlab extra is installed (``pip install -e ".[cleanlab]"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json, write_text
from ..errors import RunError
from ..markdown import table
from ..train.rundir import SIGNALS, present, read_run_arrays
from .figures import save, subplots
from .memorisation import data_map
from .metrics import auroc, average_precision, precision_recall_at_k

GATE_SIGNALS = ("gate_loss_b", "gate_entropy_b")  # per-gate histories in signals.npz, e.g. gate_loss_b3
# Signals whose per-epoch AUROC is drawn, with the sign that makes "higher = more suspicious".
PER_EPOCH = {"loss": 1.0, "margin": -1.0}


def forgetting_events(correct: np.ndarray) -> np.ndarray:
    """Per sample: learned -> forgotten transitions over epochs (Toneva et al.); a sample never
    classified correctly counts as forgotten at every epoch (``epochs``), above any learned one."""
    c = correct.astype(bool)
    events = (c[:-1] & ~c[1:]).sum(0).astype(np.float64)
    events[~c.any(0)] = c.shape[0]
    return events


def first_learned(correct: np.ndarray) -> np.ndarray:
    """Per sample: the 1-based epoch from which it stays correct to the end; epochs + 1 if wrong at
    the end (never learned for good)."""
    wrong = ~correct.astype(bool)
    last_wrong = wrong.shape[0] - 1 - np.argmax(wrong[::-1], axis=0)  # 0-based, valid where any wrong
    return np.where(wrong.any(0), last_wrong + 2, 1).astype(np.float64)


def cleanlab_score(labels: np.ndarray, probs: np.ndarray) -> np.ndarray | None:
    """-(cleanlab's label quality) per sample from predicted probabilities; None without the extra."""
    try:
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        return None
    p = probs.astype(np.float64)
    p /= p.sum(1, keepdims=True)
    return -get_label_quality_scores(labels, p)


def scores(signals: dict[str, np.ndarray], gates: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Every detection score of a run, one value per training sample (higher = more suspicious)."""
    f32 = {
        k: v.astype(np.float32)
        for k, v in signals.items()
        if k in PER_EPOCH or k == "correct" or k.startswith(GATE_SIGNALS)
    }
    out: dict[str, np.ndarray] = {}
    if gates is not None:
        for s in gates["stages"]:
            g = gates[f"g_b{s}"].astype(np.float32)
            out[f"g_final_b{s}"], out[f"g_mean_b{s}"] = g[-1], g.mean(0)
    out["loss_final"], out["loss_mean"] = f32["loss"][-1], f32["loss"].mean(0)
    out["neg_aum"] = -f32["margin"].mean(0)
    out["forgetting"] = forgetting_events(f32["correct"])
    out["first_learned"] = first_learned(f32["correct"])
    dm = data_map(f32["loss"], f32["correct"])
    out["neg_confidence"], out["variability"] = -dm["confidence"], dm["variability"]
    for k in sorted(f32):
        if k.startswith(GATE_SIGNALS):
            out[f"{k}_final"], out[f"{k}_mean"] = f32[k][-1], f32[k].mean(0)
    if "probs_final" in signals:
        lab = cleanlab_score(signals["labels"], signals["probs_final"])
        if lab is not None:
            out["cleanlab"] = lab
    return out


def detection_table(score_map: dict[str, np.ndarray], noisy: np.ndarray) -> dict[str, dict[str, float]]:
    k = int(noisy.sum())
    table = {}
    for name, s in score_map.items():
        p, r = precision_recall_at_k(s, noisy, k)
        table[name] = {
            "auroc": auroc(s, noisy),
            "ap": average_precision(s, noisy),
            "precision_at_k": p,
            "recall_at_k": r,
        }
    return table


def per_epoch_auroc(signals: dict[str, np.ndarray], gates: dict[str, np.ndarray] | None) -> dict[str, list[float]]:
    """AUROC of each per-epoch signal at every epoch (does detection decay as the net memorises?),
    and of the scores that accumulate over training as they stand after each epoch (``*_to_epoch``:
    -AUM, forgetting events, cartography's -confidence and variability, all from epoch 1 to e)."""
    noisy = signals["noisy"].astype(bool)
    series = {k: sign * signals[k].astype(np.float32) for k, sign in PER_EPOCH.items()}
    series.update({k: signals[k].astype(np.float32) for k in signals if k.startswith(GATE_SIGNALS)})
    if gates is not None:
        series.update({f"g_b{s}": gates[f"g_b{s}"].astype(np.float32) for s in gates["stages"]})
    curves = {k: [auroc(row, noisy) for row in v] for k, v in series.items()}
    for k, rows in cumulative_scores(signals).items():
        curves[k] = [auroc(row, noisy) for row in rows]
    return curves


def cumulative_scores(signals: dict[str, np.ndarray]) -> dict[str, Iterator[np.ndarray]]:
    """Per score, its value after epochs 1, 2, ... (one N-vector each, computed as it is consumed):
    at the last epoch each equals the whole-run score of ``scores``."""
    margin, loss = signals["margin"].astype(np.float64), signals["loss"].astype(np.float64)
    correct = signals["correct"].astype(bool)

    def neg_aum():
        total = np.zeros(margin.shape[1])
        for e, row in enumerate(margin, 1):
            total += row
            yield -total / e

    def forgetting():
        events, ever = np.zeros(correct.shape[1]), np.zeros(correct.shape[1], bool)
        for e, row in enumerate(correct, 1):
            if e > 1:
                events += correct[e - 2] & ~row
            ever |= row
            yield np.where(ever, events, e)  # never correct so far: above any learned sample

    def cartography(which: str):
        p1, p2 = np.zeros(loss.shape[1]), np.zeros(loss.shape[1])
        for e, row in enumerate(loss, 1):
            p = np.exp(-row)
            p1 += p
            p2 += p * p
            mean = p1 / e
            yield -mean if which == "confidence" else np.sqrt(np.maximum(p2 / e - mean * mean, 0))

    return {
        "neg_aum_to_epoch": neg_aum(),
        "forgetting_to_epoch": forgetting(),
        "neg_confidence_to_epoch": cartography("confidence"),
        "variability_to_epoch": cartography("variability"),
    }


def analyze_detection(run: str | Path, out_dir: str | Path | None = None) -> list[str]:
    """detection.md / detection.json / detection_auroc.png for a run with injected label noise.
    Returns the lines to print (one saying why, when the run has no injected noise)."""
    run = Path(run)
    if not present(run, SIGNALS):
        raise RunError(f"analyze: {run} has no {SIGNALS} (trained by an older memgate, or no epoch finished)")
    signals, gates = read_run_arrays(run)
    noisy = signals["noisy"].astype(bool)
    if not noisy.any():
        return ["  detection: skipped, the run has no injected label noise (set data.label_noise to measure it)"]
    out_dir = Path(out_dir) if out_dir else run
    table = detection_table(scores(signals, gates), noisy)
    curves = per_epoch_auroc(signals, gates)
    result = {"n": int(len(noisy)), "n_noisy": int(noisy.sum()), "scores": table, "auroc_per_epoch": curves}
    write_json(out_dir / "detection.json", result)
    write_text(out_dir / "detection.md", _markdown(run, result))
    fitted = signals["correct"][:, noisy].astype(np.float64).mean(1)
    _plot_curves(curves, out_dir / "detection_auroc.png", fitted, int(noisy.sum()), len(noisy))
    best = max(table, key=lambda k: table[k]["auroc"])
    lines = [f"  detection of the {int(noisy.sum()):,d} noisy labels (AUROC; precision at k = {int(noisy.sum()):,d}):"]
    lines += [f"    {k:<24s} {v['auroc']:.3f}   {v['precision_at_k']:.3f}" for k, v in table.items()]
    lines.append(f"    best: {best}; detection.md, detection.json, detection_auroc.png in {out_dir}")
    return lines


def _markdown(run: Path, result: dict[str, Any]) -> str:
    lines = [
        f"# Noisy-label detection: {run}",
        "",
        f"{result['n_noisy']:,d} of {result['n']:,d} training labels were corrupted. Each score ranks the "
        "training samples (higher = more suspicious); k = the number of noisy labels.",
        "",
    ]
    ranked = sorted(result["scores"].items(), key=lambda kv: -kv[1]["auroc"])
    lines += table(
        ["score", "AUROC", "average precision", "precision@k", "recall@k"],
        ([k] + [f"{v[m]:.4f}" for m in ("auroc", "ap", "precision_at_k", "recall_at_k")] for k, v in ranked),
    )
    lines += ["", "![AUROC per epoch](detection_auroc.png)", ""]
    return "\n".join(lines)


def _plot_curves(curves: dict[str, list[float]], png: Path, fitted: np.ndarray, n_noisy: int, n: int) -> None:
    """Left: the per-epoch signals and g; right: the accumulated scores after each epoch. On both, the
    share of the wrong labels the network fits (training accuracy on them, for their given label),
    so that the phases before, during and after memorisation can be read off."""
    fig, axes = subplots(1, 2, figsize=(13, 4.8))
    epochs = np.arange(1, len(fitted) + 1)
    for k, v in curves.items():
        ax = axes[1] if k.endswith("_to_epoch") else axes[0]
        ax.plot(np.arange(1, len(v) + 1), v, label=k.replace("margin", "-margin (AUM per epoch)"), lw=1.5)
    for ax, title in zip(axes, ("per-epoch signals and g", "accumulated scores, epochs 1..e")):
        ax.plot(epochs, fitted, color="k", ls=":", lw=1.5, label="wrong labels fitted (share)")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set(xlabel="epoch", ylabel="AUROC for the noisy labels", ylim=(0, 1))
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    save(fig, png, f"noisy-label detection per epoch ({n_noisy:,d} of {n:,d} training labels corrupted)", 10)
