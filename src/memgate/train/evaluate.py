"""Evaluation: accuracy and per-sample g over a split, and `memgate eval` of a saved run."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import Config
from ..data import Dataset, find_data, load_dataset, make_split, normalization
from ..data.loader import DeviceData, normalize
from ..errors import DataError
from ..models import CifarResNet, architecture_summary, build_model
from . import checkpoint as ckpt_io
from .distributed import pick_device
from .precision import autocast, resolve_precision

EVAL_BATCH = 256  # larger batches run slower on a CPU (cache) and gain nothing on a GPU at this size


def eval_precision(device: torch.device, cfg: Config) -> str:
    """A saved run is evaluated in the precision it trained in where ``device`` can: an fp32 run (or
    an imported network) in fp32, a bf16 run in bf16, falling back to fp32 without native bf16."""
    if cfg.train.precision == "fp32":
        return "fp32"
    return resolve_precision(device, cfg.train.amp)[0]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: DeviceData,
    split: str,
    autocast: AbstractContextManager,
    g_mode: str = "soft",
) -> dict[str, Any]:
    """Accuracy and per-sample g over ``split`` ('val' or 'test'); one host sync at the end."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=data.device, dtype=torch.long)
    loss = torch.zeros((), device=data.device)
    gs: dict[int, list[Tensor]] = {}
    n = 0
    for x, y in data.eval_batches(split, EVAL_BATCH):
        with autocast:
            out = model(x, g_mode=g_mode)
        correct += (out.logits.argmax(1) == y).sum()
        loss += torch.nn.functional.cross_entropy(out.logits.float(), y, reduction="sum")
        for s, go in out.gates.items():
            gs.setdefault(s, []).append(go.g.float())
        n += len(y)
    model.train(was_training)
    return {
        "acc": correct.item() / n if n else None,
        "loss": loss.item() / n if n else None,
        "g": {s: torch.cat(v) for s, v in gs.items()},
    }


@dataclass
class SavedRun:
    """A run directory (or checkpoint) opened for analysis: its config, trained model and data."""

    path: Path
    ckpt: dict[str, Any]
    cfg: Config
    net: CifarResNet
    dataset: Dataset
    data: DeviceData
    device: torch.device
    precision: str  # 'bf16' or 'fp32': what its evaluations here compute in (eval_precision)

    def autocast(self) -> AbstractContextManager:
        return autocast(self.device, self.precision)


def open_run(run: str | Path, data_path: str | None = None, device: str = "auto") -> SavedRun:
    """Load a run's checkpoint into its model and its dataset (or ``data_path``) onto ``device``."""
    path = Path(run)
    c = ckpt_io.load(path)
    cfg = ckpt_io.checkpoint_config(c, path)
    dev = pick_device(device)
    net = build_model(cfg.model, cfg.gate)
    ckpt_io.load_model_state(net, c, path)
    net.to(dev).eval()
    # Another copy of the data is only evaluated on its test split: no validation split, subset or noise.
    other = dict(path=data_path, val_size=0, train_subset=0, label_noise=0.0)
    dcfg = cfg.data if data_path is None else replace(cfg.data, **other)
    ds = load_dataset(find_data(dcfg, download=False), resize=dcfg.resize)
    if ds.num_classes != cfg.model.num_classes:
        raise DataError(f"data: {ds.source} has {ds.num_classes} classes, the model {cfg.model.num_classes}")
    data = DeviceData(ds, make_split(ds, dcfg), *normalization(dcfg, ds.name), dev)
    return SavedRun(path, c, replace(cfg, data=dcfg), net, ds, data, dev, eval_precision(dev, cfg))


def evaluate_run(
    run: str | Path, data_path: str | None = None, device: str = "auto", g_mode: str = "soft"
) -> dict[str, Any]:
    """Test accuracy and gate statistics of a run directory or checkpoint."""
    r = open_run(run, data_path, device)
    res = evaluate(r.net, r.data, "test", r.autocast(), g_mode=g_mode)
    out: dict[str, Any] = {
        "checkpoint_epoch": r.ckpt["epoch"],
        "test_acc": res["acc"],
        "test_loss": res["loss"],
        "g_mode": g_mode,
        "precision": r.precision,
    }
    lines = [
        f"{r.path}: epoch {r.ckpt['epoch']}, test accuracy {100 * res['acc']:.2f}% (g mode {g_mode}, {r.precision})"
    ]
    if r.cfg.model.gates:
        lines += _gate_lines(r, res["g"], out)
    out["text"] = "\n".join(lines)
    return out


def _gate_lines(r: SavedRun, gs: dict[int, Tensor], out: dict[str, Any]) -> list[str]:
    lines = []
    for st, g in gs.items():
        stats = {"mean": g.mean().item(), "frac_above_half": (g > 0.5).float().mean().item()}
        out[f"g_b{st}"] = stats
        lines.append(
            f"  gate over B{st}: mean g {stats['mean']:.3f}, "
            f"g > 0.5 for {100 * stats['frac_above_half']:.1f}% of test images"
        )
    if len(gs) == 1:
        summary = architecture_summary(r.net)
        skip = (next(iter(gs.values())) <= 0.5).float().mean().item()
        saved = skip * summary["macs_skippable"] / summary["macs"]
        out["hard_gate_compute_saving"] = saved
        lines.append(hard_gate_line(r.cfg.gate.input, skip, saved))
    return lines


def hard_gate_line(gate_input: str, skip: float, saved: float) -> str:
    """What rounding a single gate's g would skip (``skip``: share of images with g <= 0.5, ``saved``:
    share of MACs). A gate reading o2 needs the extra layers to compute g, so it can skip nothing."""
    if gate_input == "first_unit":
        return f"  a hard gate would skip the extra layers for {100 * skip:.1f}% of images ({100 * saved:.1f}% of MACs)"
    return (
        f"  g <= 0.5 for {100 * skip:.1f}% of images, but this gate reads o2 (the extra layers' output), "
        f"so a hard gate cannot skip them; gate.input=first_unit can ({100 * saved:.1f}% of the MACs here)"
    )


def run_dataset(run: str | Path) -> Dataset:
    """The dataset a saved run trained on, as its checkpoint's config names it (never downloaded)."""
    path = Path(run)
    cfg = ckpt_io.checkpoint_config(ckpt_io.load(path), path)
    return load_dataset(find_data(cfg.data, download=False), resize=cfg.data.resize)


@dataclass
class Outputs:
    """Every output of a network over a set of images, on the CPU, float32."""

    logits: Tensor  # (N, C)
    gate_logits: dict[int, Tensor]  # stage -> (N, C)
    g: dict[int, Tensor]  # stage -> (N,)


@torch.no_grad()
def predict(r: SavedRun, images: np.ndarray, g_mode: str = "soft", tau: float | Mapping[int, float] = 0.5) -> Outputs:
    """The run's model on uint8 NHWC ``images``, normalised as the run was trained (``g_mode`` and
    ``tau`` as in ``CifarResNet.forward``)."""
    net, dev = r.net.eval(), r.device
    logits, gate_logits, gs = [], {}, {}
    with r.autocast():
        for a in range(0, len(images), EVAL_BATCH):
            x = torch.from_numpy(np.ascontiguousarray(images[a : a + EVAL_BATCH])).to(dev)
            out = net(normalize(x, r.data.mean, r.data.std), g_mode=g_mode, tau=tau)
            logits.append(out.logits.float().cpu())
            for s, go in out.gates.items():
                gate_logits.setdefault(s, []).append(go.logits.float().cpu())
                gs.setdefault(s, []).append(go.g.float().cpu())
    cat = torch.cat
    return Outputs(cat(logits), {s: cat(v) for s, v in gate_logits.items()}, {s: cat(v) for s, v in gs.items()})
