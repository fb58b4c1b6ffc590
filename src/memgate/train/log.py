"""What a run tells its user while it trains: the epoch line on stdout and TensorBoard scalars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..analysis.memorisation import crossing_epochs

TB_SCALARS = (
    "train_loss",
    "train_acc",
    "gate_loss",
    "gate_acc",
    "val_acc",
    "test_acc",
    "lr",
    "gate_lr",
    "g_mean",
    "frac_g_above_half",
    "train_acc_noisy",
    "train_acc_clean",
    "images_per_s",
)


def open_tensorboard(folder: Path, epoch: int):
    """A SummaryWriter that drops any events a killed run logged past its checkpoint's ``epoch``."""
    from torch.utils.tensorboard import SummaryWriter

    # Events are logged at step = epoch number (1-based).
    return SummaryWriter(str(folder), purge_step=epoch + 1)


def log_tensorboard(writer, row: dict, g: Tensor | None) -> None:
    step = row["epoch"]
    for key in TB_SCALARS:
        if row.get(key) is not None:
            writer.add_scalar(key, row[key], step)
    if g is not None:
        writer.add_histogram("g/train", g.float().cpu(), step, bins=np.linspace(0, 1, 51))
    writer.flush()


def epoch_line(row: dict, epochs: int) -> str:
    parts = [
        f"epoch {row['epoch']:>3d}/{epochs}",
        f"lr {row['lr']:.4g}",
        f"loss {row['train_loss']:.4f}",
        f"train {100 * row['train_acc']:.2f}%",
    ]
    if row["val_acc"] is not None:
        parts.append(f"val {100 * row['val_acc']:.2f}%")
    if row["test_acc"] is not None:
        parts.append(f"test {100 * row['test_acc']:.2f}%")
    if row.get("train_acc_noisy") is not None:
        parts.append(f"wrong labels fitted {100 * row['train_acc_noisy']:.1f}%")
    if row["g_mean"] is not None:
        parts += [
            f"gate acc {100 * row['gate_acc']:.1f}%",
            f"g mean {row['g_mean']:.3f}",
            f"g>0.5 {100 * row['frac_g_above_half']:.1f}%",
        ]
    parts += [f"{row['epoch_time_s']:.1f}s", f"{row['images_per_s']:.0f} img/s"]
    return " | ".join(parts)


def progress_line(where: tuple[int, int, int, int], totals, seconds: float) -> str:
    """The line a run without a terminal prints within a long epoch: ``where`` = (epoch, epochs,
    batches done, batches), the epoch's running sums so far, and how fast."""
    epoch, epochs, done, n_batches = where
    seen = max(1, int(totals.seen.item()))
    return (
        f"epoch {epoch}/{epochs}: batch {done}/{n_batches} | loss {totals.loss.item() / seen:.4f} "
        f"| train {100 * totals.correct.item() / seen:.2f}% | {seen / max(seconds, 1e-9):.0f} img/s"
    )


def epoch_row(
    epoch: int,
    lrs: tuple[float, float],
    totals: list[float],
    val: dict | None,
    test: dict | None,
    times: tuple[float, float],
    g_epoch: Tensor | None,
    stages: list[int],
    fit: dict[str, float | None],
) -> dict[str, Any]:
    """One line of metrics.jsonl: the epoch's sums (loss, correct, gate loss, gate correct, seen),
    its evaluations, learning rates, (train, eval) seconds, g of each gate in ``stages`` (rows of
    ``g_epoch``) and ``fit``: training accuracy on the noisy and the clean samples (None without
    injected noise)."""
    loss, correct, gate_loss, gate_correct, seen = totals
    (lr, glr), (train_time, eval_time) = lrs, times
    gated = g_epoch is not None
    g = g_epoch[-1] if gated else None
    row = {
        "epoch": epoch + 1,
        "lr": lr,
        "gate_lr": glr if gated else None,
        "train_loss": loss / seen,
        "train_acc": correct / seen,
        "gate_loss": gate_loss / seen if gated else None,
        "gate_acc": gate_correct / seen if gated else None,
        "val_acc": val["acc"] if val else None,
        "test_acc": test["acc"] if test else None,
        "test_loss": test["loss"] if test else None,
        "g_mean": g.mean().item() if gated else None,
        "frac_g_above_half": (g > 0.5).float().mean().item() if gated else None,
        "test_g_mean": test["g"][stages[-1]].mean().item() if test and gated else None,
        **fit,
        "epoch_time_s": train_time,
        "eval_time_s": eval_time,
        "images_per_s": seen / train_time if train_time else None,
    }
    for i, st in enumerate(stages[:-1]):
        row[f"g_mean_b{st}"] = g_epoch[i].mean().item()
    return row


def run_summary(metrics: list[dict], extra: dict[str, Any]) -> dict[str, Any]:
    """summary.json: final and best-on-validation accuracies (test never selects), gate statistics."""
    last = metrics[-1]
    with_val = [m for m in metrics if m["val_acc"] is not None]
    best = max(with_val, key=lambda m: m["val_acc"]) if with_val else None
    return {
        "out": extra["out"],
        "epochs": len(metrics),
        "final_test_acc": last["test_acc"],
        "final_val_acc": last["val_acc"],
        "best_val_acc": best["val_acc"] if best else None,
        "best_val_epoch": best["epoch"] if best else None,
        "test_acc_at_best_val": best["test_acc"] if best else None,
        "final_g_mean": last["g_mean"],
        "final_frac_g_above_half": last["frac_g_above_half"],
        "memorised_final": last.get("train_acc_noisy"),  # share of the wrong labels fitted, last epoch
        **crossing_epochs([m.get("train_acc_noisy") for m in metrics]),
        "train_time_s": sum(m["epoch_time_s"] for m in metrics),
        **{k: v for k, v in extra.items() if k != "out"},
    }
