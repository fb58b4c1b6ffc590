"""`memgate train`: the paper's recipe end to end, resumable, logged.

A run directory holds config.toml (resolved), metrics.jsonl (one line per epoch), gates.npz (g of
every training sample at every epoch, from the training passes themselves), TensorBoard events in
tb/, checkpoint.pt (written atomically at every epoch end, every ``train.checkpoint_every_s``
seconds and on Ctrl-C / SIGTERM), and summary.json when finished.

The hot loop keeps everything on the device: accumulators are tensors, g is scattered into a
device buffer, and the host synchronises once per epoch (and on the progress bar's refresh).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from . import checkpoint as ckpt_io
from .augment import DeviceData, epoch_plan
from .config import Config, config_from_dict, read_toml
from .data import Split, find_data, load_dataset, make_split, normalization
from .errors import ConfigError, DataError, RunError
from .models import CifarResNet, architecture_summary, build_model
from .recipe import gate_lr_for, make_optimizers, model_lr, set_lr, train_step

RUN_FILES = ("config.toml", "metrics.jsonl", "gates.npz", "checkpoint.pt", "summary.json", "g_hist.png")
PROGRESS_EVERY = 25  # batches between progress-bar refreshes (each one is a host sync)
EVAL_BATCH = 256  # larger batches run slower on a CPU (cache) and gain nothing on a GPU at this size
NON_RESULT_KEYS = ("train.checkpoint_every_s",)  # keys that do not change what a run computes


class Interrupted(RunError):
    """Ctrl-C or SIGTERM: a checkpoint was saved; the same command resumes."""


# ----------------------------------------------------------------------------- environment


@dataclass(frozen=True)
class Dist:
    """Data-parallel context: one process per device under torchrun, else rank 0 of 1."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum_(self, t: Tensor) -> Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def average_grads(self, grads: list[Tensor]) -> None:
        if self.world > 1 and grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.world
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()


def init_distributed(device: torch.device) -> Dist:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("config: device=cuda but no CUDA device is visible; use device=cpu or device=auto")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


# ----------------------------------------------------------------------------- run directory


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _result_keys(cfg: Config) -> dict[str, Any]:
    flat = _flat(cfg.comparable())
    for k in NON_RESULT_KEYS:
        flat.pop(k, None)
    return flat


def run_state(cfg: Config, force: bool = False) -> str:
    """'fresh', 'resume' or 'done' for ``cfg.out``; refuses a run of another config unless forced."""
    out = Path(cfg.out)
    cfg_file = out / "config.toml"
    if cfg_file.exists():
        try:
            old = _result_keys(config_from_dict(read_toml(cfg_file)))
        except ConfigError:
            old = {"<unreadable config.toml>": True}
        new = _result_keys(cfg)
        diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if diff:
            if not force:
                k = diff[0]
                raise RunError(
                    f"run: {out} holds a run with another config ({k}: {old.get(k)!r} there, {new.get(k)!r} now"
                    f"{f', and {len(diff) - 1} more' if len(diff) > 1 else ''}); "
                    "choose another out=, or --force to replace it"
                )
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
            for f in (out / "tb").glob("*") if (out / "tb").exists() else []:
                f.unlink()
            return "fresh"
        if (out / "summary.json").exists():
            return "done"
        if (out / ckpt_io.CHECKPOINT).exists():
            return "resume"
    return "fresh"


def _write_json_lines(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def read_metrics(run: str | Path) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, data: DeviceData, split: str, autocast: AbstractContextManager, g_mode: str = "soft"
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


# ----------------------------------------------------------------------------- training


@dataclass
class EpochTotals:
    """Per-epoch sums kept on the device (no host sync until the epoch ends)."""

    loss: Tensor
    correct: Tensor
    gate_loss: Tensor
    gate_correct: Tensor
    seen: Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> EpochTotals:
        z = lambda dt=torch.float32: torch.zeros((), device=device, dtype=dt)  # noqa: E731
        return cls(z(), z(torch.long), z(), z(torch.long), z(torch.long))

    def as_tensor(self) -> Tensor:
        return torch.stack(
            [self.loss, self.correct.float(), self.gate_loss, self.gate_correct.float(), self.seen.float()]
        )

    def state(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu() for k, v in self.__dict__.items()}

    @classmethod
    def from_state(cls, state: dict[str, Tensor], device: torch.device) -> EpochTotals:
        return cls(**{k: v.to(device) for k, v in state.items()})


@dataclass
class RunState:
    epoch: int = 0  # next epoch to run (0-based)
    batch: int = 0  # next batch within that epoch
    iteration: int = 0  # global batches done (decides the model steps when k > 1)
    totals: EpochTotals | None = None
    g_epoch: Tensor | None = None  # (gates, N) g of the current epoch, device
    g_hist: Tensor | None = None  # (epochs, gates, N) float16, CPU; rows filled as epochs end
    metrics: list[dict] = field(default_factory=list)
    train_time: float = 0.0  # seconds spent in the current epoch's training batches


class Trainer:
    """Owns one run: data, model, optimizers, state; ``fit`` runs the remaining epochs."""

    def __init__(self, cfg: Config, device: torch.device | None = None, world: Dist | None = None, fresh: bool = True):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.device = device or pick_device(cfg.device)
        self.dist = world or init_distributed(self.device)
        self.tty = sys.stderr.isatty() and self.dist.main

        self.log("loading data ...")
        ds = load_dataset(find_data(cfg.data), progress=self.tty)
        if ds.num_classes != cfg.model.num_classes:
            raise DataError(
                f"data: {ds.source} has {ds.num_classes} classes but model.num_classes={cfg.model.num_classes}; "
                f"set model.num_classes={ds.num_classes}"
            )
        self.dataset_name = ds.name
        self.split: Split = make_split(ds, cfg.data)
        self.data = DeviceData(ds, self.split, *normalization(cfg.data, ds.name), self.device)
        self.test_labels = ds.y_test
        self.val_labels = ds.y_train[self.split.val_idx]

        torch.manual_seed(cfg.seed)
        self.net: CifarResNet = build_model(cfg.model, cfg.gate)
        if fresh and cfg.train.init != "scratch":  # a resumed run takes its weights from its own checkpoint
            ckpt_io.init_from_baseline(self.net, cfg.train.init)
        cuda = self.device.type == "cuda"
        self.net.to(
            self.device, memory_format=torch.channels_last if cfg.train.channels_last else torch.preserve_format
        )
        self.model = torch.compile(self.net) if cfg.train.compile else self.net
        self.model_opt, self.gate_opt = make_optimizers(self.net, cfg)
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.train.amp else nullcontext()
        self.stages = list(cfg.model.gates)
        self.state = RunState()
        self._stop: str | None = None

    # -- logging

    def log(self, msg: str) -> None:
        if self.dist.main:
            print(msg, flush=True)

    # -- checkpoints

    def _checkpoint_obj(self) -> dict[str, Any]:
        s = self.state
        return {
            "config": self.cfg.to_dict(),
            "model": self.net.state_dict(),
            "model_opt": self.model_opt.state_dict(),
            "gate_opt": self.gate_opt.state_dict() if self.gate_opt else None,
            "epoch": s.epoch,
            "batch": s.batch,
            "iteration": s.iteration,
            "totals": s.totals.state() if s.totals else None,
            "g_epoch": s.g_epoch.cpu() if s.g_epoch is not None else None,
            "g_hist": s.g_hist,
            "metrics": s.metrics,
            "train_time": s.train_time,
            "rng": ckpt_io.rng_state(),
        }

    def save(self) -> None:
        if self.dist.main:
            ckpt_io.save_atomic(self._checkpoint_obj(), self.out / ckpt_io.CHECKPOINT)

    def restore(self) -> None:
        path = self.out / ckpt_io.CHECKPOINT
        c = ckpt_io.load(path, map_location="cpu")
        ckpt_io.load_model_state(self.net, c, path)
        self.model_opt.load_state_dict(c["model_opt"])
        if self.gate_opt is not None:
            self.gate_opt.load_state_dict(c["gate_opt"])
        s = self.state
        s.epoch, s.batch, s.iteration = c["epoch"], c["batch"], c["iteration"]
        s.totals = EpochTotals.from_state(c["totals"], self.device) if c["totals"] else None
        s.g_epoch = c["g_epoch"].to(self.device) if c["g_epoch"] is not None else None
        s.g_hist, s.metrics, s.train_time = c["g_hist"], c["metrics"], c["train_time"]
        ckpt_io.set_rng_state(c["rng"])
        where = f"epoch {s.epoch}" + (f", batch {s.batch}" if s.batch else "")
        self.log(f"resuming {self.out} at {where}")

    # -- signals

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._stop = signal.Signals(signum).name

    # -- the loop

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        handlers = {}
        if self.dist.main and _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        writer = self._tensorboard()
        try:
            while self.state.epoch < cfg.train.epochs:
                self._train_epoch(writer)
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            if writer is not None:
                writer.close()
        return self._finish()

    def _tensorboard(self):
        if not self.dist.main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        # Events are logged at step = epoch number (1-based); drop any a killed run logged past its checkpoint.
        return SummaryWriter(str(self.out / "tb"), purge_step=self.state.epoch + 1)

    def _train_epoch(self, writer) -> None:
        cfg, s, data = self.cfg, self.state, self.data
        epoch = s.epoch
        n, bsz, k = data.n_train, cfg.train.batch_size, cfg.train.gate_iters
        n_batches = math.ceil(n / bsz)
        lr, glr = model_lr(cfg, epoch), gate_lr_for(cfg, epoch)
        set_lr(self.model_opt, lr)
        set_lr(self.gate_opt, glr)
        plan = epoch_plan(n, cfg.seed, epoch, cfg.data.augment, self.device)
        if s.batch == 0:
            s.totals = EpochTotals.zeros(self.device)
            s.g_epoch = torch.zeros((len(self.stages), n), device=self.device)
            s.train_time = 0.0
        tot = s.totals
        sync = self.dist.average_grads if self.dist.world > 1 else None
        self.model.train()

        from tqdm import tqdm

        bar = tqdm(
            total=n_batches,
            initial=s.batch,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            unit="batch",
            disable=not self.tty,
            leave=False,
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        last_ckpt = t0
        for b in range(s.batch, n_batches):
            batch = data.train_batch(plan, b * bsz, min(n, (b + 1) * bsz), self.dist.rank, self.dist.world)
            x, y, pos = batch.x, batch.y, batch.pos
            r = train_step(
                self.model,
                x,
                y,
                self.model_opt,
                self.gate_opt,
                step_model=(s.iteration + 1) % k == 0,
                autocast=self.autocast,
                sync_grads=sync,
            )
            tot.loss += r.loss * len(y)
            tot.correct += r.correct
            tot.gate_loss += r.gate_loss * len(y)
            tot.gate_correct += r.gate_correct
            tot.seen += len(y)
            for i, st in enumerate(self.stages):
                s.g_epoch[i, pos] = r.g[st]
            s.iteration += 1
            s.batch = b + 1
            if self.tty and (b % PROGRESS_EVERY == 0 or b == n_batches - 1):
                done = max(1, int(tot.seen.item()))
                bar.set_postfix(
                    loss=f"{tot.loss.item() / done:.3f}",
                    acc=f"{tot.correct.item() / done:.3f}",
                    img_s=f"{done / (s.train_time + time.perf_counter() - t0):.0f}",
                    refresh=False,
                )
                bar.update(b + 1 - bar.n)
            if self._stop and self.dist.world > 1:
                # Mid-epoch state is spread over the ranks; the epoch-end checkpoint is the consistent one.
                bar.close()
                raise Interrupted(
                    f"run: stopped by {self._stop} in epoch {epoch + 1}; run the same command to resume from "
                    f"the end of epoch {epoch} ({self.out})"
                )
            if self._stop or (
                self.dist.world == 1
                and cfg.train.checkpoint_every_s
                and time.perf_counter() - last_ckpt > cfg.train.checkpoint_every_s
            ):
                s.train_time += time.perf_counter() - t0
                t0 = last_ckpt = time.perf_counter()
                self._check_finite(tot, epoch, mid_epoch=True)
                self.save()
                if self._stop:
                    bar.close()
                    raise Interrupted(
                        f"run: stopped by {self._stop} in epoch {epoch + 1}, batch {s.batch}; checkpoint saved in "
                        f"{self.out}; run the same command to resume"
                    )
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        s.train_time += time.perf_counter() - t0
        bar.close()
        self._end_epoch(epoch, lr, glr, writer)

    def _check_finite(self, tot: EpochTotals, epoch: int, mid_epoch: bool = False) -> None:
        if not bool(torch.isfinite(tot.loss)):
            last = f"epoch {epoch}" if epoch else "none yet"
            raise RunError(
                f"run: the training loss became non-finite in epoch {epoch + 1}"
                f"{' (mid-epoch)' if mid_epoch else ''}; the last good checkpoint ({last}) is intact in {self.out}; "
                "lower train.lr or check the data"
            )

    def _end_epoch(self, epoch: int, lr: float, glr: float, writer) -> None:
        s, d = self.state, self.dist
        totals = d.sum_(s.totals.as_tensor())
        if d.world > 1:
            d.sum_(s.g_epoch)  # every rank filled only its own positions
            for buf in self.net.buffers():  # keep BN statistics identical across ranks
                dist.broadcast(buf, 0)
        loss, correct, gate_loss, gate_correct, seen = totals.tolist()
        self._check_finite(s.totals, epoch)
        t_eval = time.perf_counter()
        last = epoch + 1 == self.cfg.train.epochs
        val = test = None
        if last or (epoch + 1) % self.cfg.train.eval_every == 0:
            val = evaluate(self.model, self.data, "val", self.autocast) if len(self.data.val_y) else None
            test = evaluate(self.model, self.data, "test", self.autocast)
        eval_time = time.perf_counter() - t_eval
        g = s.g_epoch[-1] if self.stages else None
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "gate_lr": glr if self.stages else None,
            "train_loss": loss / seen,
            "train_acc": correct / seen,
            "gate_loss": gate_loss / seen if self.stages else None,
            "gate_acc": gate_correct / seen if self.stages else None,
            "val_acc": val["acc"] if val else None,
            "test_acc": test["acc"] if test else None,
            "test_loss": test["loss"] if test else None,
            "g_mean": g.mean().item() if g is not None else None,
            "frac_g_above_half": (g > 0.5).float().mean().item() if g is not None else None,
            "test_g_mean": test["g"][self.stages[-1]].mean().item() if test and self.stages else None,
            "epoch_time_s": s.train_time,
            "eval_time_s": eval_time,
            "images_per_s": seen / s.train_time if s.train_time else None,
        }
        for i, st in enumerate(self.stages[:-1]):
            row[f"g_mean_b{st}"] = s.g_epoch[i].mean().item()
        if s.g_hist is None:
            s.g_hist = torch.zeros((self.cfg.train.epochs, *s.g_epoch.shape), dtype=torch.float16)
        s.g_hist[epoch] = s.g_epoch.half().cpu()
        s.metrics = s.metrics[:epoch] + [row]
        s.epoch, s.batch = epoch + 1, 0
        if d.main:
            self.save()
            _write_json_lines(self.out / "metrics.jsonl", s.metrics)
            if self.stages:
                self._write_gates(val, test)
            if writer is not None:
                self._log_tensorboard(writer, row, g)
            self.log(_epoch_line(row, self.cfg.train.epochs))

    def _log_tensorboard(self, writer, row: dict, g: Tensor | None) -> None:
        step = row["epoch"]
        for key in (
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
        ):
            if row.get(key) is not None:
                writer.add_scalar(key, row[key], step)
        if g is not None:
            writer.add_histogram("g/train", g.float().cpu(), step, bins=np.linspace(0, 1, 51))
        writer.flush()

    def _write_gates(self, val: dict | None, test: dict | None) -> None:
        """gates.npz: g of every training sample at every epoch so far, and of the validation and
        test sets at the latest evaluated epoch (the final one once the run ends)."""
        s = self.state
        arrays: dict[str, np.ndarray] = {
            "stages": np.array(self.stages),
            "indices": self.split.train_idx,
            "labels": self.split.train_labels,
            "clean_labels": self.split.clean_labels,
            "noisy": self.split.noisy,
            "test_labels": self.test_labels,
        }
        if test is None and (self.out / "gates.npz").exists():  # keep the last evaluated g
            with np.load(self.out / "gates.npz") as old:
                arrays.update({k: old[k] for k in old.files if k.startswith(("test_g", "val_"))})
        for i, st in enumerate(self.stages):
            arrays[f"g_b{st}"] = s.g_hist[: s.epoch, i].numpy()
            if test is not None:
                arrays[f"test_g_b{st}"] = test["g"][st].cpu().numpy().astype(np.float16)
            if val is not None:
                arrays[f"val_g_b{st}"] = val["g"][st].cpu().numpy().astype(np.float16)
        if val is not None:
            arrays["val_indices"] = self.split.val_idx
            arrays["val_labels"] = self.val_labels
        tmp = self.out / ".gates.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, self.out / "gates.npz")

    def _finish(self) -> dict[str, Any]:
        metrics = self.state.metrics
        last = metrics[-1]
        with_val = [m for m in metrics if m["val_acc"] is not None]
        best = max(with_val, key=lambda m: m["val_acc"]) if with_val else None
        summary = {
            "out": str(self.out),
            "epochs": len(metrics),
            "final_test_acc": last["test_acc"],
            "final_val_acc": last["val_acc"],
            "best_val_acc": best["val_acc"] if best else None,
            "best_val_epoch": best["epoch"] if best else None,
            "test_acc_at_best_val": best["test_acc"] if best else None,
            "final_g_mean": last["g_mean"],
            "final_frac_g_above_half": last["frac_g_above_half"],
            "train_time_s": sum(m["epoch_time_s"] for m in metrics),
            "dataset": self.dataset_name,
            "n_train": self.data.n_train,
            "noisy_train": int(self.split.noisy.sum()),
            **{k: v for k, v in architecture_summary(self.net).items() if k.startswith(("params", "macs"))},
        }
        if self.dist.main:
            if self.stages:
                from .analysis import plot_g_histograms

                plot_g_histograms(self.out / "gates.npz", self.out / "g_hist.png")
            tmp = self.out / "summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2))
            os.replace(tmp, self.out / "summary.json")
        return summary


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _epoch_line(row: dict, epochs: int) -> str:
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


def train(cfg: Config, force: bool = False) -> dict[str, Any]:
    """Train (or resume, or report) the run in ``cfg.out``. Returns its summary."""
    out = Path(cfg.out)
    device = pick_device(cfg.device)
    world = init_distributed(device)
    state = _agreed_run_state(cfg, force, world)
    if state == "done":
        summary = json.loads((out / "summary.json").read_text())
        print(
            f"{out} is finished: final test accuracy {100 * summary['final_test_acc']:.2f}%"
            + (f", best val {100 * summary['best_val_acc']:.2f}%" if summary.get("best_val_acc") else "")
        )
        return summary
    trainer = Trainer(cfg, device, world, fresh=state == "fresh")
    if trainer.dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(cfg.to_toml())
    if state == "resume":
        trainer.restore()
    else:
        s = architecture_summary(trainer.net)
        trainer.log(
            f"training ResNet-{s['depth']} gates {s['gates'] or 'none'} ({s['params_total']:,d} params) "
            f"on {trainer.data.n_train:,d} images for {cfg.train.epochs} epochs on {trainer.device} -> {out}"
        )
    return trainer.fit()


def _agreed_run_state(cfg: Config, force: bool, world: Dist) -> str:
    """Rank 0 inspects (and with --force clears) the run directory; the other ranks follow its verdict."""
    verdict: list[Any] = [None]
    if world.main:
        try:
            verdict[0] = run_state(cfg, force)
        except RunError as e:
            verdict[0] = e
    if world.world > 1:
        dist.broadcast_object_list(verdict, src=0)
    if isinstance(verdict[0], RunError):
        raise verdict[0]
    return verdict[0]


# ----------------------------------------------------------------------------- eval command


def evaluate_run(
    run: str | Path, data_path: str | None = None, device: str = "auto", g_mode: str = "soft"
) -> dict[str, Any]:
    """Test accuracy and gate statistics of a run directory or checkpoint."""
    path = Path(run)
    c = ckpt_io.load(path)
    cfg = ckpt_io.checkpoint_config(c, path)
    dev = pick_device(device)
    net = build_model(cfg.model, cfg.gate)
    ckpt_io.load_model_state(net, c, path)
    net.to(dev)
    dcfg = cfg.data if data_path is None else type(cfg.data)(**{**cfg.data.__dict__, "path": data_path})
    ds = load_dataset(find_data(dcfg, download=False))
    if ds.num_classes != cfg.model.num_classes:
        raise DataError(f"data: {ds.source} has {ds.num_classes} classes, the model {cfg.model.num_classes}")
    data = DeviceData(ds, make_split(ds, dcfg), *normalization(dcfg, ds.name), dev)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" and cfg.train.amp else nullcontext()
    res = evaluate(net, data, "test", autocast, g_mode=g_mode)
    out: dict[str, Any] = {
        "checkpoint_epoch": c["epoch"],
        "test_acc": res["acc"],
        "test_loss": res["loss"],
        "g_mode": g_mode,
    }
    lines = [f"{path}: epoch {c['epoch']}, test accuracy {100 * res['acc']:.2f}% (g mode {g_mode})"]
    if cfg.model.gates:
        summary = architecture_summary(net)
        for st, g in res["g"].items():
            stats = {"mean": g.mean().item(), "frac_above_half": (g > 0.5).float().mean().item()}
            out[f"g_b{st}"] = stats
            lines.append(
                f"  gate over B{st}: mean g {stats['mean']:.3f}, "
                f"g > 0.5 for {100 * stats['frac_above_half']:.1f}% of test images"
            )
        g_last = next(iter(res["g"].values()))
        skip = (g_last <= 0.5).float().mean().item() if len(res["g"]) == 1 else None
        if skip is not None:
            saved = skip * summary["macs_skippable"] / summary["macs"]
            out["hard_gate_compute_saving"] = saved
            lines.append(
                f"  a hard gate (g rounded) would skip the extra layers for {100 * skip:.1f}% of images, "
                f"saving {100 * saved:.1f}% of MACs"
                + ("" if cfg.gate.input == "first_unit" else " (realisable only with gate.input=first_unit)")
            )
    out["text"] = "\n".join(lines)
    return out
