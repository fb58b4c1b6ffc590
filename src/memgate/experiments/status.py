"""`memgate sweep GRID --status`: where each run of a long grid stands, and how long the rest will take.

Reads only what runs write anyway (summary.json, metrics.jsonl, the lock, config.toml, the sweep's
train.log), so it is safe to call while the sweep trains, and a grid whose folders do not exist
yet is simply "not started".
"""

from __future__ import annotations

import signal
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..config import load_config
from ..errors import MemgateError
from ..train.lock import lock_holder
from ..train.rundir import LOCK, read_metrics, read_summary
from .grid import Grid, Run

LOG = "train.log"  # what the sweep writes for each run: the command, its output, its exit status
EXIT_MARK = "memgate sweep: exit status "
INTERRUPTED = 130  # what `memgate train` exits with when a signal stopped it at a checkpoint
# ...and what a run killed by one before its handlers were up (still starting) exits with
STOPPED_BY_SIGNAL = (INTERRUPTED, -signal.SIGINT, -signal.SIGTERM)


@dataclass(frozen=True)
class RunStatus:
    run: Run
    state: str  # "done", "running", "stopped", "failed", "not started"
    epoch: int  # epochs finished
    epochs: int  # epochs of the whole run
    test_acc: float | None  # final (done) or last evaluated
    s_per_epoch: float | None  # measured: a typical epoch's training + evaluation seconds (``epoch_rate``)
    detail: str = ""  # why it failed, or why it cannot be read


def _total_epochs(grid: Grid, run: Run) -> int:
    """The run's epoch count, as the grid defines it."""
    return load_config(grid.config, run.overrides).train.epochs


def last_error(lines: list[str]) -> str:
    """The line of a log most likely to say why a run failed: the last that mentions an error."""
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["(no output)"])[-1].strip().removeprefix("memgate: error: ")


def _last_exit(log: Path) -> tuple[int | None, str]:
    """The exit status the sweep recorded for the run's last attempt (None: none recorded, or that
    attempt is still going) and the attempt's last error line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None, ""
    starts = [i for i, ln in enumerate(lines) if ln.startswith("$ ")]
    attempt = lines[starts[-1] :] if starts else lines
    if not attempt or not attempt[-1].startswith(EXIT_MARK):
        return None, ""
    try:
        rc = int(attempt[-1][len(EXIT_MARK) :].split()[0])
    except (ValueError, IndexError):
        return None, ""
    return rc, last_error(attempt[1:-1])


def describe_run(grid: Grid, run: Run) -> RunStatus:
    epochs = _total_epochs(grid, run)
    if not run.out.is_dir():
        return RunStatus(run, "not started", 0, epochs, None, None)
    try:
        summary = read_summary(run.out)
        rows = read_metrics(run.out)
    except MemgateError as e:
        return RunStatus(run, "failed", 0, epochs, None, None, str(e))
    if summary is not None:
        return RunStatus(run, "done", len(rows), epochs, summary["final_test_acc"], epoch_rate(rows, finished=True))
    tested = [r["test_acc"] for r in rows if r["test_acc"] is not None]
    rate = epoch_rate(rows, finished=False)
    last = tested[-1] if tested else None
    if lock_holder(run.out / LOCK) is not None:
        return RunStatus(run, "running", len(rows), epochs, last, rate)
    rc, why = _last_exit(run.out / LOG)
    if rc not in (None, 0, *STOPPED_BY_SIGNAL):
        return RunStatus(run, "failed", len(rows), epochs, last, rate, why)
    if not rows and not (run.out / LOG).exists():
        return RunStatus(run, "not started", 0, epochs, None, None)
    return RunStatus(run, "stopped", len(rows), epochs, last, rate)


RECENT = 10  # an unfinished run's rate: the median of its last epochs, the machine as it is now


def epoch_rate(rows: list[dict], finished: bool) -> float | None:
    """Seconds per epoch (training + evaluation) from metrics.jsonl's ``rows``, as a median, so that
    epochs slowed by other work, or paused, do not set the rate of the runs still to come: over all
    epochs of a finished run, over the last ``RECENT`` of an unfinished one (the machine as it is now).
    What a finished run cost in all is its summary.json's ``train_time_s``."""
    secs = [r["epoch_time_s"] + r["eval_time_s"] for r in rows]
    if not secs:
        return None
    return statistics.median(secs if finished else secs[-RECENT:])


def _cost(variant: str, finished: list[RunStatus]) -> float:
    """A variant's seconds per epoch relative to the grid's, from its finished runs (1 where none)."""
    mine = [f.s_per_epoch for f in finished if f.run.variant == variant]
    if not mine:
        return 1.0
    return statistics.median(mine) / statistics.median(f.s_per_epoch for f in finished)


def run_rates(states: list[RunStatus]) -> list[float | None]:
    """Seconds per epoch for each run's remaining epochs. A running run: its own recent pace (a
    finished one: its median epoch). The others, while some run: the machine's pace now (the running
    runs' recent seconds per epoch, each divided by its variant's relative cost) times their
    variant's cost, since their own or their variant's rates may come from another machine or load.
    With none running: their own rate, else their variant's median, else the grid's."""
    finished = [s for s in states if s.state == "done" and s.s_per_epoch is not None]
    running = [s for s in states if s.state == "running" and s.s_per_epoch is not None]
    measured = [s for s in states if s.s_per_epoch is not None]
    now = statistics.median(s.s_per_epoch / _cost(s.run.variant, finished) for s in running) if running else None

    def rate(s: RunStatus) -> float | None:
        if s.state in ("running", "done") and s.s_per_epoch is not None:
            return s.s_per_epoch
        if now is not None:
            return now * _cost(s.run.variant, finished)
        if s.s_per_epoch is not None:
            return s.s_per_epoch
        for pool in ([m for m in measured if m.run.variant == s.run.variant], measured):
            if pool:
                return statistics.median(m.s_per_epoch for m in pool)
        return None

    return [rate(s) for s in states]


def time_to_finish(left: list[tuple[RunStatus, float]], jobs: int) -> float:
    """Seconds until the last of the unfinished runs ends, each taking its ``left`` seconds, when a
    sweep with ``jobs`` lanes trains them as ``sweep`` does: the running ones hold lanes from now,
    the others start in the grid's order as soon as a lane is free and their baseline is finished.
    Not the total divided by the lanes: an odd run out trains alone, a dependent run waits."""
    ends = {s.run.out: secs for s, secs in left if s.state == "running"}  # run folder -> end time
    pending = [(s.run, secs) for s, secs in left if s.state != "running"]
    todo = {s.run.out for s, _ in left}
    now = 0.0
    while pending:
        active = [t for t in ends.values() if t > now]
        for run, secs in list(pending):
            dep = run.depends_on
            if len(active) < jobs and (dep not in todo or ends.get(dep, float("inf")) <= now):
                pending.remove((run, secs))
                ends[run.out] = now + secs
                active.append(now + secs)
        if not pending or not active:  # all started, or the rest wait on a baseline that never starts
            break
        now = min(active)
    return max(ends.values(), default=0.0)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def _line(s: RunStatus) -> str:
    acc = f"test {100 * s.test_acc:.2f}%" if s.test_acc is not None else ""
    rate = f"{s.s_per_epoch:.0f} s/epoch" if s.s_per_epoch is not None else ""
    if s.state == "done":
        text = f"done, {acc}" + (f" ({s.epoch} epochs, {rate})" if rate else "")
    elif s.state in ("running", "stopped"):
        text = f"{s.state} at epoch {s.epoch}/{s.epochs}" + "".join(f", {x}" for x in (acc, rate) if x)
    elif s.state == "failed":
        text = f"failed at epoch {s.epoch}/{s.epochs}: {s.detail}"
    else:
        text = "not started"
    return f"  {s.run.name:<40s} {text}"


def status_report(grid: Grid, runs: list[Run], jobs: int = 1) -> str:
    """One line per run, a count per state, and the remaining run time at the measured rates."""
    states = [describe_run(grid, r) for r in runs]
    lines = [f"{grid.name}: {len(runs)} runs"]
    lines += [_line(s) for s in states]
    counts = {k: sum(s.state == k for s in states) for k in ("done", "running", "stopped", "failed", "not started")}
    lines.append("  " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    rates = [(s, r) for s, r in zip(states, run_rates(states)) if s.state != "done"]
    if not rates:
        lines.append("  nothing left to run")
        return "\n".join(lines)
    unknown = [s for s, r in rates if r is None]
    if unknown:
        lines.append(f"  remaining time unknown: {len(unknown)} run(s) have no measured rate yet (no epoch finished)")
        return "\n".join(lines)
    left = [(s, (s.epochs - s.epoch) * r) for s, r in rates]
    text = f"  remaining: {_hours(sum(secs for _, secs in left))} of training at the measured rates"
    if jobs > 1:
        text += f", about {_hours(time_to_finish(left, jobs))} with {jobs} runs at once"
    lines.append(text)
    return "\n".join(lines)
