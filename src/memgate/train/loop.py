"""`memgate train`: the paper's recipe end to end, resumable, logged.

One ``Trainer`` owns one run: its data on the device, the model, both optimizers and its progress.
``fit`` runs the remaining epochs; each epoch is begin -> batches -> end, one short method each.
The hot loop keeps everything on the device: accumulators are tensors, g is scattered into a
device buffer, and the host synchronises once per epoch (and on the progress bar's refresh).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analysis.gates import plot_g_histograms
from ..analysis.memorisation import fit_by_noise
from ..config import Config
from ..data import find_data, load_dataset, make_split, normalization
from ..data.loader import DeviceData, EpochPlan, epoch_plan
from ..errors import CheckpointError, DataError, Interrupted, MemgateError, RunError
from ..models import CifarResNet, architecture_summary, build_model
from . import checkpoint as ckpt_io
from . import rundir
from .distributed import Dist, average_buffers, init_distributed, pick_device, shared_outcome
from .evaluate import evaluate
from .history import History, read_rows
from .log import epoch_line, epoch_row, log_tensorboard, open_tensorboard, progress_line, run_summary
from .precision import autocast, with_precision
from .recipe import freeze_bn, gate_lr, make_optimizers, model_lr, set_lr, train_step
from .signals import SampleSignals, probs_epochs, signal_names
from .state import EpochTotals, RunState

PROGRESS_EVERY = 25  # batches between progress-bar refreshes (each one is a host sync)
PROGRESS_LINE_S = 120.0  # without a terminal (a log file, a scheduler): a progress line this often


class Trainer:
    """Owns one run: data, model, optimizers, state; ``fit`` runs the remaining epochs."""

    def __init__(self, cfg: Config, device: torch.device | None = None, world: Dist | None = None, fresh: bool = True):
        self.device = device or pick_device(cfg.device)
        if self.device.type == "cuda":  # fixed input shapes: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = True
        self.cfg, self.precision_note = with_precision(cfg, self.device)
        cfg = self.cfg
        self.out = Path(cfg.out)
        self.dist = world or init_distributed(self.device)
        self.tty = sys.stderr.isatty() and self.dist.main
        self._load_data()
        torch.manual_seed(cfg.seed)
        self.net: CifarResNet = build_model(cfg.model, cfg.gate)
        if fresh and cfg.train.init != "scratch":  # a resumed run takes its weights from its own checkpoint
            ckpt_io.init_from_baseline(self.net, cfg.train.init)
        memory_format = torch.channels_last if cfg.train.channels_last else torch.preserve_format
        self.net.to(self.device, memory_format=memory_format)
        self.model = torch.compile(self.net) if cfg.train.compile else self.net
        self.model_opt, self.gate_opt = make_optimizers(self.net, cfg)
        self.autocast = autocast(self.device, cfg.train.precision)
        self.stages = list(cfg.model.gates)
        self.state = RunState()
        names = signal_names(self.stages)
        self.samples = SampleSignals(names, self.data.n_train, probs_epochs(cfg), self.device)
        self.g_names = [f"g_b{st}" for st in self.stages]
        self.history = History(self.out / rundir.HISTORY, names + self.g_names, cfg.train.epochs, self.data.n_train)
        self._stop: str | None = None

    def _load_data(self) -> None:
        cfg = self.cfg
        self.log("loading data ...")
        ds = load_dataset(find_data(cfg.data), progress=self.tty, resize=cfg.data.resize)
        if ds.num_classes != cfg.model.num_classes:
            raise DataError(
                f"data: {ds.source} has {ds.num_classes} classes but model.num_classes={cfg.model.num_classes}; "
                f"set model.num_classes={ds.num_classes}"
            )
        self.dataset_name = ds.name
        self.split = make_split(ds, cfg.data)
        self.data = DeviceData(ds, self.split, *normalization(cfg.data, ds.name), self.device)
        self.test_labels = ds.y_test
        self.val_labels = ds.y_train[self.split.val_idx]

    def log(self, msg: str) -> None:
        if self.dist.main:
            print(msg, flush=True)

    # -- checkpoints

    def save(self) -> None:
        if self.dist.main:
            self.state.samples = self.samples.state()
            obj = ckpt_io.build(self.cfg, self.net, self.model_opt, self.gate_opt, self.state)
            ckpt_io.save(obj, self.out / rundir.CHECKPOINT)

    def restore(self) -> None:
        path = self.out / rundir.CHECKPOINT
        c = ckpt_io.load(path, map_location="cpu")
        self.state = ckpt_io.restore(c, path, self.net, self.model_opt, self.gate_opt, self.device)
        s = self.state
        if s.samples:
            try:
                self.samples.load(s.samples)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise CheckpointError(f"checkpoint: {path} has damaged per-sample signals ({e}); delete it") from None
        at = f"epoch {s.epoch}" + (f", batch {s.batch}" if s.batch else "")
        self.log(f"resuming {self.out} at {at} ({self.precision_note})")
        if self.dist.main and s.epoch:
            self._write_epoch_files()  # a kill between the checkpoint and these files left them behind

    def _write_epoch_files(self, final: bool = False) -> None:
        """metrics.jsonl, signals.npz and gates.npz, derived from the checkpoint (the one truth). Until
        the run ends the npz files name the history rows they cover (cost independent of the epochs);
        the final ones hold the whole histories, so that a finished run is its files alone."""
        if not self.history.exists():  # a finished run (summary lost): its final npz files hold the histories
            self._rows(self.samples.names[0]), self.stages and self._rows(self.g_names[0])  # fail if damaged
            rundir.write_metrics(self.out, self.state.metrics)
            return
        rundir.write_metrics(self.out, self.state.metrics)
        names = self.samples.names
        rundir.write_signals(
            self.out, {**self._split_arrays(), **self.samples.probs_arrays(), **self._history_arrays(names, final)}
        )
        if self.stages:
            self._write_gates(final)

    def _history_arrays(self, names: list[str], final: bool) -> dict[str, Any]:
        if final:
            return {k: self._rows(k) for k in names}
        return rundir.history_reference(names, self.state.epoch)

    def _rows(self, name: str) -> np.ndarray:
        """Every finished epoch's row of a history: from history/ while it exists (a run in progress),
        else from the final npz file that holds it."""
        if self.history.exists():
            return read_rows(self.history.path(name), self.state.epoch)
        lost = f"checkpoint: {self.out} has lost its per-sample histories (no history/ folder, and %s); "
        try:
            rows = (rundir.read_gates if name in self.g_names else rundir.read_signals)(self.out).get(name)
        except RunError as e:
            raise CheckpointError(lost % str(e).removeprefix("run: ") + "train it again with --force") from None
        if rows is None or rows.shape != (self.state.epoch, self.data.n_train):
            raise CheckpointError(lost % f"no complete {name} in its npz files" + "train it again with --force")
        return rows

    # -- the loop

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._stop = signal.Signals(signum).name

    def fit(self) -> dict[str, Any]:
        if self.dist.main and (self.state.epoch < self.cfg.train.epochs or self.history.exists()):
            self.history.open(self.state.epoch)
        handlers = {}
        if self.dist.main and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        writer = self._open_tensorboard() if self.dist.main else None
        try:
            while self.state.epoch < self.cfg.train.epochs:
                self._train_epoch(writer)
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            if writer is not None:
                writer.close()
        return self._finish()

    def _open_tensorboard(self):
        """Events past the checkpoint's last epoch are dropped, and that epoch is logged again (a
        kill may have come between its checkpoint and its events)."""
        s = self.state
        writer = open_tensorboard(self.out / rundir.TENSORBOARD, max(0, s.epoch - 1))
        if s.epoch:
            g = torch.from_numpy(self._rows(self.g_names[-1])[-1]) if self.stages else None
            log_tensorboard(writer, s.metrics[-1], g)
        return writer

    def _train_epoch(self, writer) -> None:
        epoch = self.state.epoch
        lr, glr, plan = self._begin_epoch(epoch)
        self._run_batches(plan, epoch)
        self._end_epoch(epoch, lr, glr, writer)

    def _begin_epoch(self, epoch: int) -> tuple[float, float, EpochPlan]:
        cfg, s = self.cfg, self.state
        lr, glr = model_lr(cfg, epoch), gate_lr(cfg, epoch)
        set_lr(self.model_opt, lr)
        set_lr(self.gate_opt, glr)
        if s.batch == 0:
            s.totals = EpochTotals.zeros(self.device)
            s.g_epoch = torch.zeros((len(self.stages), self.data.n_train), device=self.device)
            self.samples.start_epoch(epoch, self.cfg.model.num_classes)
            s.train_time = 0.0
        self.model.train()
        if cfg.train.freeze == "backbone_bn":
            freeze_bn(self.net)
        return lr, glr, epoch_plan(self.data.n_train, cfg.seed, epoch, cfg.data.augment, self.device)

    def _run_batches(self, plan: EpochPlan, epoch: int) -> None:
        from tqdm import tqdm

        s, bsz = self.state, self.cfg.train.batch_size
        n_batches = math.ceil(self.data.n_train / bsz)
        desc = f"epoch {epoch + 1}/{self.cfg.train.epochs}"
        bar = tqdm(total=n_batches, initial=s.batch, desc=desc, unit="batch", disable=not self.tty, leave=False)
        t0 = last_ckpt = last_line = time.perf_counter()
        with bar:
            for b in range(s.batch, n_batches):
                self._step(plan, b)
                if self.tty and (b % PROGRESS_EVERY == 0 or b == n_batches - 1):
                    self._progress(bar, b, t0)
                elif not self.tty and time.perf_counter() - last_line >= PROGRESS_LINE_S and b < n_batches - 1:
                    last_line = time.perf_counter()
                    where = (epoch + 1, self.cfg.train.epochs, b + 1, n_batches)
                    self.log(progress_line(where, s.totals, s.train_time + last_line - t0))
                if self._stop or self._checkpoint_due(last_ckpt):
                    s.train_time += time.perf_counter() - t0
                    t0 = last_ckpt = time.perf_counter()
                    self._checkpoint_mid_epoch(epoch)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        s.train_time += time.perf_counter() - t0

    def _step(self, plan: EpochPlan, b: int) -> None:
        s, n, bsz = self.state, self.data.n_train, self.cfg.train.batch_size
        batch = self.data.train_batch(plan, b * bsz, min(n, (b + 1) * bsz), self.dist.rank, self.dist.world)
        r = train_step(
            self.model,
            batch.x,
            batch.y,
            self.model_opt,
            self.gate_opt,
            step_model=(s.iteration + 1) % self.cfg.train.gate_iters == 0,
            autocast=self.autocast,
            sync_grads=self.dist.average_grads if self.dist.world > 1 else None,
        )
        tot = s.totals
        tot.loss += r.loss * len(batch.y)
        tot.correct += r.correct
        tot.gate_loss += r.gate_loss * len(batch.y)
        tot.gate_correct += r.gate_correct
        tot.seen += len(batch.y)
        for i, st in enumerate(self.stages):
            s.g_epoch[i, batch.pos] = r.g[st]
        self.samples.record(batch.pos, r.logits, r.gate_logits, batch.y)
        s.iteration += 1
        s.batch = b + 1

    def _progress(self, bar, b: int, t0: float) -> None:
        tot, s = self.state.totals, self.state
        done = max(1, int(tot.seen.item()))
        bar.set_postfix(
            loss=f"{tot.loss.item() / done:.3f}",
            acc=f"{tot.correct.item() / done:.3f}",
            img_s=f"{done / (s.train_time + time.perf_counter() - t0):.0f}",
            refresh=False,
        )
        bar.update(b + 1 - bar.n)

    def _checkpoint_due(self, last: float) -> bool:
        every = self.cfg.train.checkpoint_every_s
        return self.dist.world == 1 and bool(every) and time.perf_counter() - last > every

    def _checkpoint_mid_epoch(self, epoch: int) -> None:
        """A mid-epoch checkpoint (timer or signal); after a signal, stop with a resumable state."""
        if self._stop and self.dist.world > 1:
            # Mid-epoch state is spread over the ranks; the epoch-end checkpoint is the consistent one.
            raise Interrupted(
                f"run: stopped by {self._stop} in epoch {epoch + 1}; run the same command to resume from "
                f"the end of epoch {epoch} ({self.out})"
            )
        self._check_finite(self.state.totals, epoch, mid_epoch=True)
        self.save()
        if self._stop:
            raise Interrupted(
                f"run: stopped by {self._stop} in epoch {epoch + 1}, batch {self.state.batch}; checkpoint saved in "
                f"{self.out}; run the same command to resume"
            )

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
            average_buffers(self.net, d)
        self._check_finite(s.totals, epoch)
        t_eval = time.perf_counter()
        val, test = self._evaluate(epoch)
        self._check_finite_eval(val, test, epoch)
        g = s.g_epoch if self.stages else None
        rows = self.samples.end_epoch(epoch, d.sum_)
        times = (s.train_time, time.perf_counter() - t_eval)
        row = epoch_row(epoch, (lr, glr), totals.tolist(), val, test, times, g, self.stages, self._fit(rows["correct"]))
        rows.update({k: s.g_epoch[i].half().cpu().numpy() for i, k in enumerate(self.g_names)})
        s.metrics = s.metrics[:epoch] + [row]
        for name, res in (("val", val), ("test", test)):
            if res is not None:
                s.last_eval[name] = {st: g.cpu().half() for st, g in res["g"].items()}
        s.epoch, s.batch = epoch + 1, 0
        error = None
        if d.main:
            try:
                self._write_epoch(epoch, rows, row, writer)
            except MemgateError as e:  # a full disk on rank 0: every rank stops with it
                error = e
        shared_outcome(d, error)

    def _write_epoch(self, epoch: int, rows: dict[str, np.ndarray], row: dict, writer) -> None:
        """Rank 0's part of an epoch end: history row, snapshot, checkpoint, derived files, the epoch line."""
        self.history.write(epoch, rows)  # valid only once the checkpoint below counts the epoch
        every = self.cfg.train.snapshot_every
        if every and (epoch + 1) % every == 0:  # before the checkpoint: a kill between them redoes both
            ckpt_io.save_snapshot(self.cfg, self.net, self.out, epoch + 1)
        self.save()  # the epoch is done once its checkpoint is; the files below derive from it
        self._write_epoch_files()
        if writer is not None:
            log_tensorboard(writer, row, self.state.g_epoch[-1] if self.stages else None)
        self.log(epoch_line(row, self.cfg.train.epochs))

    def _fit(self, correct: np.ndarray) -> dict[str, float | None]:
        """This epoch's training accuracy on the noisy and on the clean samples (None without noise)."""
        if not self.split.noisy.any():
            return {"train_acc_noisy": None, "train_acc_clean": None}
        return {k: float(v[0]) for k, v in fit_by_noise(correct, self.split.noisy).items()}

    def _check_finite_eval(self, val: dict | None, test: dict | None, epoch: int) -> None:
        """A checkpoint is good only if its evaluation is finite too (no NaN in metrics.jsonl)."""
        bad = [n for n, r in (("validation", val), ("test", test)) if r and not math.isfinite(r["loss"])]
        if bad:
            last = f"epoch {epoch}" if epoch else "none yet"
            raise RunError(
                f"run: the {bad[0]} loss became non-finite in epoch {epoch + 1}; the last good checkpoint "
                f"({last}) is intact in {self.out}; lower train.lr or check the data"
            )

    def _evaluate(self, epoch: int) -> tuple[dict | None, dict | None]:
        if epoch + 1 != self.cfg.train.epochs and (epoch + 1) % self.cfg.train.eval_every:
            return None, None
        val = evaluate(self.model, self.data, "val", self.autocast) if len(self.data.val_y) else None
        return val, evaluate(self.model, self.data, "test", self.autocast)

    def _split_arrays(self) -> dict[str, np.ndarray]:
        """What every per-sample file carries to say which sample each column is."""
        return {
            "indices": self.split.train_idx,
            "labels": self.split.train_labels,
            "clean_labels": self.split.clean_labels,
            "noisy": self.split.noisy,
            "test_labels": self.test_labels,
        }

    def _write_gates(self, final: bool) -> None:
        """gates.npz: g of every training sample at every epoch so far, and of the validation and
        test sets at the latest evaluated epoch (the final one once the run ends)."""
        s = self.state
        arrays: dict[str, Any] = {"stages": np.array(self.stages), **self._split_arrays()}
        arrays.update(self._history_arrays(self.g_names, final))
        for st in self.stages:
            for name in ("test", "val"):
                if st in s.last_eval.get(name, {}):
                    arrays[f"{name}_g_b{st}"] = s.last_eval[name][st].numpy()
        if "val" in s.last_eval:
            arrays["val_indices"] = self.split.val_idx
            arrays["val_labels"] = self.val_labels
        rundir.write_gates(self.out, arrays)

    def _finish(self) -> dict[str, Any]:
        extra = {
            "out": str(self.out),
            "dataset": self.dataset_name,
            "n_train": self.data.n_train,
            "noisy_train": int(self.split.noisy.sum()),
            "precision": self.cfg.train.precision,
            **{k: v for k, v in architecture_summary(self.net).items() if k.startswith(("params", "macs"))},
        }
        summary = run_summary(self.state.metrics, extra)
        if self.dist.main:
            if self.history.exists():
                self._write_epoch_files(final=True)
            if self.stages:
                plot_g_histograms(self.out / rundir.GATES, self.out / rundir.G_HIST_PNG)
            rundir.write_summary(self.out, summary)
            rundir.remove_history(self.out)  # the final npz files hold it now
        return summary
