"""What a run tells its user while it trains: the epoch line on stdout and TensorBoard scalars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

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
    if row["g_mean"] is not None:
        parts += [
            f"gate acc {100 * row['gate_acc']:.1f}%",
            f"g mean {row['g_mean']:.3f}",
            f"g>0.5 {100 * row['frac_g_above_half']:.1f}%",
        ]
    parts += [f"{row['epoch_time_s']:.1f}s", f"{row['images_per_s']:.0f} img/s"]
    return " | ".join(parts)
