"""Multi-seed experiment grids: expansion, dependency order, sharding, sweeps and reports.

A grid file (TOML) names a base config, overrides for every run, a list of seeds and named
variants (each a list of ``KEY=VALUE`` overrides, optionally ``init_from`` another variant of the
same seed, optionally the paper's reported ``paper = [mean, std]``). ``memgate sweep`` runs every
variant x seed under ``runs/<grid>/<variant>/seed<s>/``, each as its own ``memgate train``
process; ``memgate report`` turns the finished runs into tables and figures.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import load_config, read_toml
from .errors import ConfigError, MemgateError

GRID_KEYS = {"name", "title", "config", "overrides", "seeds", "variant", "baseline"}
VARIANT_KEYS = {"name", "overrides", "init_from", "paper"}


@dataclass(frozen=True)
class Run:
    variant: str
    seed: int
    out: Path
    overrides: tuple[str, ...]  # everything passed to `memgate train` after the base config
    depends_on: Path | None  # run directory that must finish first (baseline initialisation)

    @property
    def name(self) -> str:
        return f"{self.variant}/seed{self.seed}"


@dataclass(frozen=True)
class Grid:
    name: str
    title: str
    config: Path
    seeds: tuple[int, ...]
    variants: tuple[dict[str, Any], ...]
    baseline: str | None  # the variant the report compares against
    overrides: tuple[str, ...] = ()
    source: Path = field(default=Path("."))

    def runs(self, root: str | Path = "runs", extra: tuple[str, ...] = ()) -> list[Run]:
        """Every variant x seed, dependencies before their dependents."""
        base = Path(root) / self.name
        runs = []
        for v in _dependency_order(self.variants):
            for s in self.seeds:
                out = base / v["name"] / f"seed{s}"
                dep = base / v["init_from"] / f"seed{s}" if v.get("init_from") else None
                ov = [*self.overrides, *v.get("overrides", ()), *extra, f"seed={s}", f"out={out}"]
                if dep is not None:
                    ov.append(f"train.init={dep}")
                runs.append(Run(v["name"], s, out, tuple(ov), dep))
        return runs


def _dependency_order(variants: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    by_name = {v["name"]: v for v in variants}
    done: list[dict[str, Any]] = []

    def visit(v: dict[str, Any], path: tuple[str, ...]) -> None:
        if v in done:
            return
        dep = v.get("init_from")
        if dep:
            if dep not in by_name:
                raise ConfigError(f"grid: variant {v['name']} has init_from={dep!r}, which is no variant of the grid")
            if dep in path:
                raise ConfigError(f"grid: variants {' -> '.join((*path, dep))} depend on each other in a circle")
            visit(by_name[dep], (*path, v["name"]))
        done.append(v)

    for v in variants:
        visit(v, (v["name"],))
    return done


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    raw = read_toml(path)
    unknown = set(raw) - GRID_KEYS
    if unknown:
        raise ConfigError(f"grid: unknown key(s) {sorted(unknown)} in {path} (known: {sorted(GRID_KEYS)})")
    if "config" not in raw or not raw.get("variant"):
        raise ConfigError(f'grid: {path} needs `config = "..."` and at least one [[variant]]')
    variants = []
    for v in raw["variant"]:
        bad = set(v) - VARIANT_KEYS
        if bad or "name" not in v:
            raise ConfigError(f"grid: variant {v.get('name', '?')} in {path} has unknown keys {sorted(bad)} or no name")
        if "/" in v["name"] or not v["name"]:
            raise ConfigError(f"grid: variant name {v['name']!r} must be a plain folder name")
        variants.append(v)
    names = [v["name"] for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"grid: {path} repeats a variant name")
    baseline = raw.get("baseline", "baseline" if "baseline" in names else None)
    if baseline is not None and baseline not in names:
        raise ConfigError(f"grid: baseline = {baseline!r} is no variant of {path}")
    config = (path.parent / raw["config"]).resolve()
    grid = Grid(
        name=raw.get("name", path.stem),
        title=raw.get("title", path.stem),
        config=config,
        seeds=tuple(raw.get("seeds", [0])),
        variants=tuple(variants),
        baseline=baseline,
        overrides=tuple(raw.get("overrides", ())),
        source=path,
    )
    _dependency_order(grid.variants)
    return grid


def validate_runs(grid: Grid, runs: list[Run]) -> None:
    """Build every run's config up front so a typo fails before hours of training, not after."""
    for r in runs:
        try:
            load_config(grid.config, [o for o in r.overrides if not o.startswith("train.init=")])
        except ConfigError as e:
            raise ConfigError(f"grid: run {r.name}: {e}") from None


# ----------------------------------------------------------------------------- sharding


def parse_shard(spec: str | None) -> tuple[int, int]:
    if spec is None:
        return 1, 1
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ConfigError(f"sweep: --shard {spec!r} must look like I/N, e.g. 2/4") from None
    if not 1 <= i <= n:
        raise ConfigError(f"sweep: --shard {spec}: I must be between 1 and N")
    return i, n


def shard_runs(runs: list[Run], index: int, count: int) -> list[Run]:
    """The ``index``-th (1-based) of ``count`` deterministic shards.

    A run and everything it depends on stay in one shard, so a shard never waits for another
    machine; whole dependency groups are dealt out largest first to the lightest shard.
    """
    groups: dict[tuple[str, int], list[Run]] = {}
    root_of = {r.out: r for r in runs}
    for r in runs:
        head = r
        while head.depends_on is not None and head.depends_on in root_of:
            head = root_of[head.depends_on]
        groups.setdefault((head.variant, head.seed), []).append(r)
    loads = [0] * count
    owner: dict[tuple[str, int], int] = {}
    for key in sorted(groups, key=lambda k: (-len(groups[k]), k)):
        target = min(range(count), key=lambda i: (loads[i], i))
        owner[key] = target
        loads[target] += len(groups[key])
    mine = {id(r) for key, rs in groups.items() if owner[key] == index - 1 for r in rs}
    return [r for r in runs if id(r) in mine]


# ----------------------------------------------------------------------------- sweep


def run_status(run: Run) -> str:
    if (run.out / "summary.json").exists():
        return "done"
    if (run.out / "checkpoint.pt").exists():
        return "partial"
    return "todo"


def _write_grid_meta(grid: Grid, root: Path) -> None:
    meta = {
        "name": grid.name,
        "title": grid.title,
        "config": str(grid.config),
        "seeds": list(grid.seeds),
        "baseline": grid.baseline,
        "variants": [
            {
                "name": v["name"],
                "overrides": list(v.get("overrides", ())),
                "init_from": v.get("init_from"),
                "paper": v.get("paper"),
            }
            for v in grid.variants
        ],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "grid.json").write_text(json.dumps(meta, indent=2))


def sweep(
    grid_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    jobs: int = 1,
    shard: str | None = None,
    dry_run: bool = False,
    runs_root: str | Path = "runs",
    seeds: tuple[int, ...] | None = None,
) -> int:
    """Run (or resume, or skip) every run of a grid; 0 when all finished, 1 when any failed."""
    grid = load_grid(grid_path)
    if seeds:
        grid = dataclasses.replace(grid, seeds=tuple(seeds))
    runs = grid.runs(runs_root, tuple(overrides))
    validate_runs(grid, runs)
    index, count = parse_shard(shard)
    mine = shard_runs(runs, index, count)
    if jobs < 1:
        raise ConfigError(f"sweep: --jobs {jobs} must be at least 1")
    header = f"{grid.name}: {len(runs)} runs ({len(grid.variants)} variants x {len(grid.seeds)} seeds)"
    if count > 1:
        header += f", shard {index}/{count}: {len(mine)} runs"
    print(header)
    if dry_run:
        for r in mine:
            print(f"  [{run_status(r):>7s}] {r.name:<40s} memgate train -c {grid.config} {' '.join(r.overrides)}")
        return 0
    _write_grid_meta(grid, Path(runs_root) / grid.name)
    return _execute(grid, mine, jobs)


def _env_for(slot: int, jobs: int) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    visible = env.get("CUDA_VISIBLE_DEVICES")
    n_gpu = _cuda_count()
    if n_gpu > 1 and jobs > 1 and visible is None:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % n_gpu)
    return env


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch CUDA, no GPUs to share out
        return 0


def _launch(grid: Grid, run: Run, slot: int, jobs: int) -> tuple[int, float]:
    run.out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "memgate", "train", "-c", str(grid.config), *run.overrides]
    t = time.perf_counter()
    with open(run.out / "train.log", "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env_for(slot, jobs))
    return rc, time.perf_counter() - t


def _execute(grid: Grid, runs: list[Run], jobs: int) -> int:
    pending = [r for r in runs if run_status(r) != "done"]  # already in dependency order
    if len(runs) > len(pending):
        print(f"  {len(runs) - len(pending)} run(s) already finished, skipped")
    failed: dict[Path, str] = {}
    running: dict[Future, tuple[Run, int]] = {}
    free_slots = list(range(jobs))
    total, started = len(pending), 0

    def fail(r: Run, why: str) -> None:
        failed[r.out] = why
        print(f"  FAILED {r.name}: {why}", flush=True)

    with ThreadPoolExecutor(jobs) as pool:
        while pending or running:
            waiting_on = {r.out for r in pending} | {r.out for r, _ in running.values()}
            for r in list(pending):
                dep = r.depends_on
                if dep is not None and dep in failed:
                    pending.remove(r)
                    fail(r, f"its baseline {dep} failed")
                elif dep is not None and not (dep / "summary.json").exists() and dep not in waiting_on:
                    pending.remove(r)
                    fail(r, f"its baseline {dep} is not finished and not part of this sweep or shard")
                elif free_slots and (dep is None or (dep / "summary.json").exists()):
                    pending.remove(r)
                    slot = free_slots.pop(0)
                    started += 1
                    print(f"  [{started}/{total}] start {r.name} ({run_status(r)})", flush=True)
                    running[pool.submit(_launch, grid, r, slot, jobs)] = (r, slot)
            if not running:
                continue
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                r, slot = running.pop(fut)
                free_slots.append(slot)
                rc, secs = fut.result()
                if rc == 0 and (r.out / "summary.json").exists():
                    acc = json.loads((r.out / "summary.json").read_text())["final_test_acc"]
                    print(f"  done {r.name} in {secs:.0f}s: test {100 * acc:.2f}%", flush=True)
                else:
                    fail(r, f"exit status {rc}: {_last_error(r.out / 'train.log')} (log: {r.out / 'train.log'})")
    ok = sum(1 for r in runs if (r.out / "summary.json").exists())
    print(f"{grid.name}: {ok}/{len(runs)} runs finished" + (f", {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def _last_error(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["(no output)"])[-1].strip()


# ----------------------------------------------------------------------------- report


def welch(a: list[float], b: list[float]) -> dict[str, float | None]:
    """Mean difference a - b with a 95% confidence interval and Welch's two-sided t-test p-value."""
    from scipy import stats

    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    diff = float(a_.mean() - b_.mean())
    if len(a_) < 2 or len(b_) < 2:
        return {"diff": diff, "ci_low": None, "ci_high": None, "p": None, "df": None}
    va, vb = a_.var(ddof=1) / len(a_), b_.var(ddof=1) / len(b_)
    se = math.sqrt(va + vb)
    if se == 0:
        return {"diff": diff, "ci_low": diff, "ci_high": diff, "p": None, "df": None}
    df = (va + vb) ** 2 / (va**2 / (len(a_) - 1) + vb**2 / (len(b_) - 1))
    half = float(stats.t.ppf(0.975, df)) * se
    p = float(stats.ttest_ind(a_, b_, equal_var=False).pvalue)
    return {"diff": diff, "ci_low": diff - half, "ci_high": diff + half, "p": p, "df": float(df)}


def collect(runs_dir: str | Path) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """(grid metadata, {variant: [summary of each finished seed]}) of a grid's output folder."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise MemgateError(f"report: {root} is not a folder; pass a grid's output, e.g. runs/quick")
    meta_file = root / "grid.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else None
    names = [v["name"] for v in meta["variants"]] if meta else sorted(p.name for p in root.iterdir() if p.is_dir())
    if meta is None:
        meta = {
            "name": root.name,
            "title": root.name,
            "baseline": "baseline" if "baseline" in names else None,
            "variants": [{"name": n, "paper": None} for n in names],
        }
    results: dict[str, list[dict]] = {}
    for name in names:
        rows = []
        for seed_dir in sorted(
            (root / name).glob("seed*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else 0
        ):
            f = seed_dir / "summary.json"
            if f.exists():
                s = json.loads(f.read_text())
                s["seed"] = int(seed_dir.name[4:])
                s["run"] = str(seed_dir)
                rows.append(s)
        results[name] = rows
    if not any(results.values()):
        raise MemgateError(f"report: no finished runs (summary.json) under {root}; run `memgate sweep` first")
    return meta, results


def _fmt(x: float | None, nd: int = 2, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.{nd}f}" if pct else f"{x:.{nd}f}"


def summarize(meta: dict[str, Any], results: dict[str, list[dict]]) -> list[dict[str, Any]]:
    base_name = meta.get("baseline")
    base = [r["final_test_acc"] for r in results.get(base_name, [])] if base_name else []
    rows = []
    for v in meta["variants"]:
        runs = results.get(v["name"], [])
        if not runs:
            rows.append({"variant": v["name"], "n": 0})
            continue
        acc = [r["final_test_acc"] for r in runs]
        best_val = [r["best_val_acc"] for r in runs if r.get("best_val_acc") is not None]
        g = [r["final_g_mean"] for r in runs if r.get("final_g_mean") is not None]
        frac = [r["final_frac_g_above_half"] for r in runs if r.get("final_frac_g_above_half") is not None]
        row: dict[str, Any] = {
            "variant": v["name"],
            "n": len(acc),
            "seeds": " ".join(str(r["seed"]) for r in runs),
            "test_acc_mean": float(np.mean(acc)),
            "test_acc_std": float(np.std(acc, ddof=1)) if len(acc) > 1 else None,
            "best_val_acc_mean": float(np.mean(best_val)) if best_val else None,
            "g_mean": float(np.mean(g)) if g else None,
            "frac_g_above_half": float(np.mean(frac)) if frac else None,
        }
        if base and v["name"] != base_name:
            w = welch(acc, base)
            row.update(
                {"diff_vs_baseline": w["diff"], "ci_low": w["ci_low"], "ci_high": w["ci_high"], "p_value": w["p"]}
            )
        paper = v.get("paper")
        if paper:
            row["paper_mean"] = paper[0] / 100
            row["paper_std"] = paper[1] / 100 if len(paper) > 1 and paper[1] is not None else None
        rows.append(row)
    return rows


CSV_COLUMNS = [
    "variant",
    "n",
    "seeds",
    "test_acc_mean",
    "test_acc_std",
    "best_val_acc_mean",
    "diff_vs_baseline",
    "ci_low",
    "ci_high",
    "p_value",
    "g_mean",
    "frac_g_above_half",
    "paper_mean",
    "paper_std",
]


def report(runs_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write report.md, results.csv and figures for a grid's runs; returns the report path."""
    meta, results = collect(runs_dir)
    out_dir = Path(out) if out else Path(runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summarize(meta, results)
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in CSV_COLUMNS})
    figures = _figures(meta, results, out_dir)
    has_paper = any("paper_mean" in r for r in rows)
    lines = [
        f"# {meta.get('title', meta['name'])}",
        "",
        "Final test accuracy (%) over seeds: mean, sample std; best validation accuracy (never used to pick "
        "test numbers); difference to the baseline with a 95% confidence interval and Welch's t-test p-value; "
        "gate statistics of the final epoch (training samples).",
        "",
    ]
    head = ["variant", "n", "test acc", "std", "best val", "diff vs baseline [95% CI]", "p", "mean g", "g > 0.5"]
    if has_paper:
        head += ["paper", "paper std"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if not r["n"]:
            lines.append(f"| {r['variant']} | 0 | " + " | ".join(["-"] * (len(head) - 2)) + " |")
            continue
        diff = "-"
        if r.get("diff_vs_baseline") is not None:
            diff = f"{100 * r['diff_vs_baseline']:+.2f}"
            if r.get("ci_low") is not None:
                diff += f" [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]"
        cells = [
            r["variant"],
            str(r["n"]),
            _fmt(r["test_acc_mean"]),
            _fmt(r["test_acc_std"]),
            _fmt(r["best_val_acc_mean"]),
            diff,
            _fmt(r.get("p_value"), 3, pct=False),
            _fmt(r["g_mean"], 3, False),
            _fmt(r["frac_g_above_half"], 1),
        ]
        if has_paper:
            cells += [_fmt(r.get("paper_mean"), 3), _fmt(r.get("paper_std"), 3)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    print((out_dir / "report.md").read_text())
    return out_dir / "report.md"


def _figures(meta: dict[str, Any], results: dict[str, list[dict]], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .analysis import load_gates, plot_g_histograms, plot_top_g_images
    from .training import read_metrics

    names = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for v in meta["variants"]:
        runs = results.get(v["name"], [])
        curves = [[m["test_acc"] for m in read_metrics(r["run"]) if m["test_acc"] is not None] for r in runs]
        epochs = [[m["epoch"] for m in read_metrics(r["run"]) if m["test_acc"] is not None] for r in runs]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        arr = 100 * np.array([c[:n] for c in curves])
        x = epochs[0][:n]
        mean = arr.mean(0)
        ax.plot(x, mean, label=f"{v['name']} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(x, mean - arr.std(0, ddof=1), mean + arr.std(0, ddof=1), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{meta.get('title', meta['name'])}: test accuracy, mean and std over seeds", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "curves.png", dpi=110)
    plt.close(fig)
    names.append("curves.png")

    gated = [
        (v["name"], results[v["name"]][0])
        for v in meta["variants"]
        if results.get(v["name"]) and (Path(results[v["name"]][0]["run"]) / "gates.npz").exists()
    ]
    for name, run in gated:
        png = f"fig2_{name}.png"
        plot_g_histograms(
            Path(run["run"]) / "gates.npz",
            out_dir / png,
            title=f"{name}, seed {run['seed']}: g of the training samples over epochs (Figure 2)",
        )
        names.append(png)
    if gated:
        name, run = gated[0]
        try:
            from .checkpoint import checkpoint_config, load
            from .data import find_data, load_dataset

            cfg = checkpoint_config(load(run["run"]), run["run"])
            ds = load_dataset(find_data(cfg.data, download=False))
            plot_top_g_images(ds.x_train, load_gates(run["run"]), list(ds.classes), out_dir / "top_g.png")
            names.append("top_g.png")
        except MemgateError as e:
            print(f"report: no top-g image grid ({e})", file=sys.stderr)
    return names
