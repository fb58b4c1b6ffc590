"""`memgate sweep`: every run of a grid as its own `memgate train` process, resumable and shardable.

Runs go to ``runs/<grid>/<variant>/seed<s>/``; finished ones are skipped, unfinished ones resume,
a failed one is logged and the sweep goes on (exit status 1 at the end); SIGINT or SIGTERM stops every run
at a checkpoint and starts no more (exit status 130; the same command resumes).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from pathlib import Path

from ..atomic import write_json
from ..errors import ConfigError, StorageError
from ..train.rundir import CHECKPOINT, is_finished, read_summary
from .grid import Grid, Run, load_grid, parse_shard, shard_runs, validate_runs
from .status import EXIT_MARK, INTERRUPTED, LOG, STOPPED_BY_SIGNAL, last_error, status_report

GRID_META = "grid.json"


def _stage(run: Run) -> str:
    if is_finished(run.out):
        return "done"
    if (run.out / CHECKPOINT).exists():
        return "partial"
    return "todo"


def _write_grid_meta(grid: Grid, root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"sweep: cannot create {root} ({e.strerror}); pass a writable --runs folder") from None
    write_json(root / GRID_META, grid.meta())


def sweep(
    grid_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    jobs: int = 1,
    shard: str | None = None,
    dry_run: bool = False,
    status: bool = False,
    runs_root: str | Path = "runs",
    seeds: tuple[int, ...] | None = None,
    variants: tuple[str, ...] | None = None,
) -> int:
    """Run (or resume, or skip) every run of a grid; 0 when all finished, 1 when any failed.

    ``seeds`` replaces the grid's seeds; ``variants`` keeps only those variants' runs (their
    baseline-initialisation sources must then be finished already or be among them).
    """
    grid = load_grid(grid_path)
    if seeds:
        grid = dataclasses.replace(grid, seeds=tuple(seeds))
    runs = grid.runs(runs_root, tuple(overrides))
    if variants:
        known = [v["name"] for v in grid.variants]
        unknown = [v for v in variants if v not in known]
        if unknown:
            raise ConfigError(
                f"sweep: --variants {','.join(unknown)}: no such variant in {grid_path} ({', '.join(known)})"
            )
        runs = [r for r in runs if r.variant in variants]
    validate_runs(grid, runs)
    index, count = parse_shard(shard)
    mine = shard_runs(runs, index, count)
    if jobs < 1:
        raise ConfigError(f"sweep: --jobs {jobs} must be at least 1")
    if status:
        print(status_report(grid, mine, jobs))
        return 0
    n_variants, n_seeds = len({r.variant for r in runs}), len({r.seed for r in runs})
    header = f"{grid.name}: {len(runs)} runs ({n_variants} variants, {n_seeds} seeds)"
    if count > 1:
        header += f", shard {index}/{count}: {len(mine)} runs"
    print(header)
    if dry_run:
        for r in mine:
            print(f"  [{_stage(r):>7s}] {r.name:<40s} memgate train -c {grid.config} {' '.join(r.overrides)}")
        return 0
    _write_grid_meta(grid, Path(runs_root) / grid.name)
    return _execute(grid, mine, jobs)


def _env_for(slot: int, jobs: int) -> dict[str, str]:
    """A run's environment: its share of the cores this process may use (a scheduler's allocation,
    not the whole node) and, with several GPUs visible, one of them, in order (under SLURM or PBS the
    visible ones are those CUDA_VISIBLE_DEVICES names, by index or UUID)."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // jobs)))
    gpus = visible_gpus(env)
    if len(gpus) > 1 and jobs > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return env


def usable_cores() -> int:
    """The cores this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def visible_gpus(env: dict[str, str]) -> list[str]:
    """The GPUs a run may use, as CUDA_VISIBLE_DEVICES entries."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    return [str(i) for i in range(_cuda_count())]


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch CUDA, no GPUs to share out
        return 0


class _Lanes:
    """The sweep's running `memgate train` processes, and its stop: on SIGINT or SIGTERM (Ctrl-C, a
    scheduler's time limit, `kill`) every run is told the same and saves a checkpoint, and no run starts
    after it. The sweep installs its own handlers, so a sweep started with SIGINT ignored (a background
    command of a script) still stops."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # RLock: a second signal may arrive inside the first's handler
        self.procs: set[subprocess.Popen] = set()
        self.stop: str | None = None  # the signal that stopped the sweep, or the run that was interrupted

    def on_signal(self, signum: int, _frame: object) -> None:
        with self.lock:
            self.stop = self.stop or signal.Signals(signum).name
            for proc in self.procs:
                if proc.poll() is None:
                    proc.send_signal(signum)

    def handle_signals(self) -> dict[int, object]:
        """Install the handlers (main thread only: Python allows no other); the ones replaced."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def launch(self, grid: Grid, run: Run, slot: int, jobs: int) -> tuple[int | None, float]:
        """The run's exit status and seconds; None when the sweep stopped before it started."""
        cmd = [sys.executable, "-m", "memgate", "train", "-c", str(grid.config), *run.overrides]
        t = time.perf_counter()
        with ExitStack() as stack:
            with self.lock:  # held until the process is known, so that a signal cannot miss it
                if self.stop:  # stopped between this run's submission and its start: leave no trace
                    return None, 0.0
                run.out.mkdir(parents=True, exist_ok=True)  # the runs root was checked writable first
                log = stack.enter_context(open(run.out / LOG, "a"))
                log.write(f"$ {' '.join(cmd)}\n")
                log.flush()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env_for(slot, jobs))
                self.procs.add(proc)
            rc = proc.wait()
            with self.lock:
                self.procs.discard(proc)
            log.write(f"{EXIT_MARK}{rc}\n")
        return rc, time.perf_counter() - t


def _execute(grid: Grid, runs: list[Run], jobs: int) -> int:
    """Start each run once a lane is free and its baseline finished; 0 when all finished, 1 when any
    failed, 130 when a signal (or a run stopped by one) stopped the sweep: the same command resumes."""
    pending = [r for r in runs if _stage(r) != "done"]  # already in dependency order
    if len(runs) > len(pending):
        print(f"  {len(runs) - len(pending)} run(s) already finished, skipped")
    lanes = _Lanes()
    replaced = lanes.handle_signals()
    try:
        failed = _schedule(grid, pending, jobs, lanes)
    finally:
        for sig, handler in replaced.items():
            signal.signal(sig, handler)
    ok = sum(1 for r in runs if is_finished(r.out))
    line = f"{grid.name}: {ok}/{len(runs)} runs finished" + (f", {len(failed)} failed" if failed else "")
    if lanes.stop:
        print(f"{line}; stopped ({lanes.stop}): run the same command to resume", flush=True)
        return INTERRUPTED
    print(line, flush=True)
    return 1 if failed else 0


def _schedule(grid: Grid, pending: list[Run], jobs: int, lanes: _Lanes) -> dict[Path, str]:
    """Run ``pending`` on ``jobs`` lanes until done or stopped; the failed runs and why."""
    failed: dict[Path, str] = {}
    running: dict[Future, tuple[Run, int]] = {}
    free_slots = list(range(jobs))
    total, started = len(pending), 0

    def fail(r: Run, why: str) -> None:
        failed[r.out] = why
        print(f"  FAILED {r.name}: {why}", flush=True)

    with ThreadPoolExecutor(jobs) as pool:
        while (pending and not lanes.stop) or running:
            waiting_on = {r.out for r in pending} | {r.out for r, _ in running.values()}
            for r in list(pending) if not lanes.stop else []:
                dep = r.depends_on
                if dep is not None and dep in failed:
                    pending.remove(r)
                    fail(r, f"its baseline {dep} failed")
                elif dep is not None and not is_finished(dep) and dep not in waiting_on:
                    pending.remove(r)
                    fail(r, f"its baseline {dep} is not finished and not part of this sweep or shard")
                elif free_slots and (dep is None or is_finished(dep)):
                    pending.remove(r)
                    slot = free_slots.pop(0)
                    started += 1
                    print(f"  [{started}/{total}] start {r.name} ({_stage(r)})", flush=True)
                    running[pool.submit(lanes.launch, grid, r, slot, jobs)] = (r, slot)
            if not running:
                continue
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                r, slot = running.pop(fut)
                free_slots.append(slot)
                rc, secs = fut.result()
                if rc is None:  # never started: the sweep was stopped first
                    continue
                if rc == 0 and is_finished(r.out):
                    acc = read_summary(r.out)["final_test_acc"]
                    print(f"  done {r.name} in {secs:.0f}s: test {100 * acc:.2f}%", flush=True)
                elif rc in STOPPED_BY_SIGNAL:
                    # Stopped by a signal at a checkpoint (Ctrl-C, a scheduler, `kill`), not failed: start
                    # nothing more; the runs still going finish or stop as they were told.
                    lanes.stop = lanes.stop or f"{r.name} was interrupted"
                    going = f"; no run starts, waiting for the {len(running)} still running" if running else ""
                    print(f"  stopped {r.name} at its checkpoint after {secs:.0f}s (resumable){going}", flush=True)
                else:
                    fail(r, f"exit status {rc}: {_last_error(r.out / LOG)} (log: {r.out / LOG})")
    return failed


def _last_error(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    return last_error([ln for ln in lines if not ln.startswith(EXIT_MARK)])
