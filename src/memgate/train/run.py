"""`memgate train`'s entry point: one run directory from lock to summary.

The run directory decides what happens (``rundir.run_state``: fresh, resume, done, or replace with
--force); under DDP rank 0 decides and the other ranks follow. The ``Trainer`` (loop.py) does the work.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import RunError
from ..models import architecture_summary
from . import rundir
from .distributed import Dist, agree, end_distributed, init_distributed, pick_device
from .lock import lock
from .loop import Trainer
from .precision import with_precision


def train(cfg: Config, force: bool = False) -> dict[str, Any]:
    """Train (or resume, or report) the run in ``cfg.out``. Returns its summary.

    The run directory is locked for the whole run; with ``force``, a run of another config there is
    deleted only once the new run is ready to start (data loaded, model built)."""
    out = Path(cfg.out)
    device = pick_device(cfg.device)
    cfg, _ = with_precision(cfg, device)  # the run's config states the precision it computes in
    world = init_distributed(device)
    try:
        return _train(cfg, out, device, world, force)
    finally:
        end_distributed()


def _train(cfg: Config, out: Path, device, world: Dist, force: bool) -> dict[str, Any]:
    with lock(out) if world.main else nullcontext():
        state = _agreed_run_state(cfg, force, world)
        if state == "done":
            return _report_finished(out)
        trainer = Trainer(cfg, device, world, fresh=state != "resume")
        if state == "resume":
            trainer.restore()  # before the config is rewritten: a damaged checkpoint changes no file
        if trainer.dist.main:
            if state == "replace":
                rundir.clear(out)
            rundir.write_config(out, cfg)
        if state != "resume":
            trainer.log(_start_line(trainer))
        return trainer.fit()


def _report_finished(out: Path) -> dict[str, Any]:
    summary = rundir.read_summary(out)
    print(f"{out} was already finished (nothing trained)")
    return summary


def final_line(summary: dict[str, Any]) -> str:
    """What `memgate train` ends with: the run folder, the final test accuracy, the training time."""
    hours = summary["train_time_s"] / 3600
    took = f"{hours:.1f} h" if hours >= 1 else f"{60 * hours:.1f} min"
    best = f", best val {100 * summary['best_val_acc']:.2f}%" if summary.get("best_val_acc") is not None else ""
    return (
        f"{summary['out']}: final test accuracy {100 * summary['final_test_acc']:.2f}%{best} "
        f"after {summary['epochs']} epochs, {took} of training"
    )


def _start_line(trainer: Trainer) -> str:
    s, cfg, world = architecture_summary(trainer.net), trainer.cfg, trainer.dist.world
    line = (
        f"training ResNet-{s['depth']} gates {s['gates'] or 'none'} ({s['params_total']:,d} params) "
        f"on {trainer.data.n_train:,d} images for {cfg.train.epochs} epochs on {trainer.device} "
        f"({trainer.precision_note}) -> {cfg.out}"
    )
    if world > 1:
        per = cfg.train.batch_size // world
        line += (
            f"\ndata-parallel over {world} ranks: {per} images per rank and step (global batch "
            f"{cfg.train.batch_size}), so BatchNorm sees {per} images at a time; the paper's recipe is one "
            "GPU with batch 128"
        )
    return line


def _agreed_run_state(cfg: Config, force: bool, world: Dist) -> str:
    """Rank 0 inspects (and with --force clears) the run directory; the other ranks follow its verdict."""
    verdict: object = None
    if world.main:
        try:
            verdict = rundir.run_state(cfg, force)
        except RunError as e:
            verdict = e
    verdict = agree(world, verdict)
    if isinstance(verdict, RunError):
        raise verdict
    return str(verdict)
