"""`memgate report`: a grid's finished runs as tables (mean, std, Welch CI and p) and figures."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from .. import schema
from ..analysis.memorisation import run_fit
from ..atomic import write_text
from ..config import config_from_dict
from ..errors import MemgateError
from ..markdown import table
from ..outputs import claim, record
from ..parsing import loads_json, read_toml
from ..train.rundir import (
    CONFIG,
    DETECTION,
    OOD,
    TRADEOFF,
    config_difference,
    describe_difference,
    read_analysis,
    read_metrics,
    read_summary,
)
from .detection_table import detection_markdown
from .grid import baseline_of, load_grid
from .report_figures import draw_figures, figure2_numbers, pairs_by_epoch
from .sweep import GRID_META
from .tradeoff_table import tradeoff_markdown


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


def collect(runs_dir: str | Path, grid: str | Path | None = None) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """(grid metadata, {variant: [summary of each finished seed]}) of a grid's output folder. The
    metadata is the sweep's grid.json, or, given ``grid``, that grid file's (for a folder assembled
    from several machines or sessions), else each subfolder is a variant."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise MemgateError(f"report: {root} is not a folder; pass a grid's output, e.g. runs/quick")
    meta_file = root / GRID_META
    if grid is not None:
        meta = load_grid(grid).meta()
    elif meta_file.exists():
        meta = _read_meta(meta_file)
    else:  # each subfolder a variant, or the variant of each <variant>_seed<s>/
        found = sorted({_FLAT.sub("", p.name) for p in root.iterdir() if p.is_dir()})
        meta = {
            "name": root.name,
            "title": root.name,
            "baseline": "baseline" if "baseline" in found else None,
            "variants": [{"name": n, "paper": None} for n in found],
        }
    names = [v["name"] for v in meta["variants"]]
    results: dict[str, list[dict]] = {}
    seen: dict[Path, Path] = {}
    for name in names:
        rows = []
        seed_dirs = _seed_dirs(root, name)
        _check_one_recipe(name, seed_dirs)
        for seed, seed_dir in seed_dirs:
            same = seen.setdefault(seed_dir.resolve(), seed_dir)
            if same != seed_dir:
                raise MemgateError(f"report: {seed_dir} and {same} are one run; keep one of them")
            s = read_summary(seed_dir)
            if s is not None:
                _check_run_files(seed_dir)
                s["seed"] = seed
                s["run"] = str(seed_dir)
                rows.append(s)
        results[name] = rows
    if not any(results.values()):
        raise MemgateError(f"report: no finished runs (summary.json) under {root}; run `memgate sweep` first")
    return meta, results


_FLAT = re.compile(r"_seed\d+$")


def _seed_dirs(root: Path, name: str) -> list[tuple[int, Path]]:
    """(seed, folder) of a variant's runs, by seed: a sweep's ``<variant>/seed<s>/``, or the
    ``<variant>_seed<s>/`` in which a results folder keeps each run's small files (summary.json,
    metrics.jsonl, the analyses' json)."""
    found: dict[int, Path] = {}
    for folder, prefix in ((root / name, "seed"), (root, f"{name}_seed")):
        for p in folder.glob(f"{prefix}*") if folder.is_dir() else ():
            tail = p.name[len(prefix) :]
            if not (p.is_dir() and tail.isdigit()):
                continue
            if p.is_symlink() or (root / name).is_symlink():  # two names for one run would count it twice
                raise MemgateError(
                    f"report: {p} is a symbolic link; a report reads each run's own folder (copy the run in)"
                )
            if int(tail) in found:
                raise MemgateError(
                    f"report: seed {tail} of {name} is both {found[int(tail)]} and {p}; keep one of them"
                )
            found[int(tail)] = p
    return sorted(found.items())


PER_SEED_KEYS = ("seed", "train.init")  # what differs between the seeds of one variant (with out)


def _check_one_recipe(name: str, seed_dirs: list[tuple[int, Path]]) -> None:
    """A variant's row is one recipe over seeds: its runs' config.toml must agree but for the seed
    (and the same seed's baseline it started from)."""
    runs = [(seed, run / CONFIG) for seed, run in seed_dirs if (run / CONFIG).is_file()]
    if len(runs) < 2:
        return
    first_seed, first = runs[0]
    cfg = config_from_dict(read_toml(first))
    for seed, path in runs[1:]:
        diff = [d for d in config_difference(cfg, path) if d[0] not in PER_SEED_KEYS]
        if diff:
            raise MemgateError(
                f"report: the seeds of {name} were trained with different configs "
                f"({describe_difference(diff, f'in seed {seed}', f'in seed {first_seed}')}); a row holds one "
                "recipe: remove the odd run or train it again"
            )


def _check_run_files(run: Path) -> None:
    """Read (and so check) a run's metrics.jsonl, ood.json, tradeoff.json and detection.json before
    anything is written."""
    read_metrics(run)
    read_analysis(run, OOD, "ood")
    read_analysis(run, DETECTION, "analyze")
    read_analysis(run, TRADEOFF, "tradeoff")


def _read_meta(path: Path) -> dict[str, Any]:
    """grid.json, checked against ``schema.GRID``."""
    try:
        meta = loads_json(path.read_text())
        schema.check(meta, schema.GRID)
        for i, v in enumerate(meta["variants"]):
            if v.get("paper") is not None and not (1 <= len(v["paper"]) <= 2 and v["paper"][0] is not None):
                raise schema.SchemaError(f"variants[{i}].paper", "must be [mean] or [mean, std]")
    except (OSError, ValueError) as e:
        raise MemgateError(
            f"report: {path}{schema.problem(e)}; run `memgate sweep` with the grid file again to rewrite it"
        ) from None
    return meta


def _fmt(x: float | None, nd: int = 2, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.{nd}f}" if pct else f"{x:.{nd}f}"


def summarize(meta: dict[str, Any], results: dict[str, list[dict]]) -> list[dict[str, Any]]:
    rows = []
    for v in meta["variants"]:
        base_name = baseline_of(meta, v)
        base = [r["final_test_acc"] for r in results.get(base_name, [])] if base_name else []
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
            "memorised_mean": _memorised(runs),
        }
        if base and v["name"] != base_name:
            w = welch(acc, base)
            row.update(
                {
                    "baseline": base_name,
                    "diff_vs_baseline": w["diff"],
                    "ci_low": w["ci_low"],
                    "ci_high": w["ci_high"],
                    "p_value": w["p"],
                    **_seed_pairs(runs, results[base_name]),
                }
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
    "baseline",
    "diff_vs_baseline",
    "ci_low",
    "ci_high",
    "p_value",
    "pairs",
    "pairs_lower",
    "pairs_higher",
    "g_mean",
    "frac_g_above_half",
    "memorised_mean",
    "paper_mean",
    "paper_std",
]


def _seed_pairs(runs: list[dict], base: list[dict]) -> dict[str, int]:
    """How many same-seed pairs have the variant below and above its baseline: with 2-3 seeds a
    claim should hold in every pair (ties count as neither)."""
    base_acc = {r["seed"]: r["final_test_acc"] for r in base}
    diffs = [r["final_test_acc"] - base_acc[r["seed"]] for r in runs if r["seed"] in base_acc]
    return {"pairs": len(diffs), "pairs_lower": sum(d < 0 for d in diffs), "pairs_higher": sum(d > 0 for d in diffs)}


def _memorised(runs: list[dict]) -> float | None:
    """Mean over seeds of the share of wrong labels fitted in the last epoch (None without noise)."""
    fits = [f["train_acc_noisy"][-1] for r in runs if (f := run_fit(Path(r["run"]))) is not None]
    return float(np.mean(fits)) if fits else None


def report(
    runs_dir: str | Path, out: str | Path | None = None, grid: str | Path | None = None, force: bool = False
) -> Path:
    """Write report.md, results.csv and figures for a grid's runs; returns the report path. ``out``
    may not be a run's folder nor hold another grid's report (unless ``force``)."""
    meta, results = collect(runs_dir, grid)
    rows = summarize(meta, results)
    detection = detection_markdown(meta, results)  # reads (and so checks) every run's npz files first
    out_dir = claim(out or runs_dir, runs_dir, "report", force)
    _write_csv(rows, out_dir / "results.csv")
    figures = draw_figures(meta, results, out_dir)
    tradeoff_lines, tradeoff_figures = tradeoff_markdown(meta, results, out_dir)
    extra = pairs_by_epoch(meta, results) + figure2_numbers(meta, results) + detection + tradeoff_lines
    text = _markdown(meta, rows, figures + tradeoff_figures, extra)
    write_text(out_dir / "report.md", text)
    record(out_dir, runs_dir, "report")
    print(text)
    return out_dir / "report.md"


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in CSV_COLUMNS})
    write_text(path, buf.getvalue())


def _markdown(meta: dict[str, Any], rows: list[dict[str, Any]], figures: list[str], extra: list[str]) -> str:
    has_paper = any("paper_mean" in r for r in rows)
    lines = [
        f"# {meta.get('title', meta['name'])}",
        "",
        "Final test accuracy (%) over seeds: mean, sample std; best validation accuracy (never used to pick "
        "test numbers); difference to the baseline with a 95% confidence interval and Welch's t-test p-value; "
        "gate statistics of the final epoch (training samples); wrong labels fitted: training accuracy on the "
        "samples with a corrupted label, for that label, in the last epoch (mean over seeds; - without noise).",
        "",
    ]
    head = ["variant", "n", "test acc", "std", "best val", "diff vs baseline [95% CI]", "p", "seed pairs below / above"]
    head += ["mean g", "g > 0.5"]
    head.append("wrong labels fitted")
    if has_paper:
        head += ["paper", "paper std"]
    lines += table(
        head, (_cells(r, has_paper) if r["n"] else [r["variant"], 0] + ["-"] * (len(head) - 2) for r in rows)
    )
    lines += ["", *extra, "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def _cells(r: dict[str, Any], has_paper: bool) -> list[str]:
    diff = "-"
    if r.get("diff_vs_baseline") is not None:
        diff = f"{100 * r['diff_vs_baseline']:+.2f}"
        if r.get("ci_low") is not None:
            diff += f" [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]"
        diff += f" vs {r['baseline']}"
    cells = [
        r["variant"],
        str(r["n"]),
        _fmt(r["test_acc_mean"]),
        _fmt(r["test_acc_std"]),
        _fmt(r["best_val_acc_mean"]),
        diff,
        _fmt(r.get("p_value"), 3, pct=False),
        f"{r['pairs_lower']} / {r['pairs_higher']} of {r['pairs']}" if r.get("pairs") else "-",
        _fmt(r["g_mean"], 3, False),
        _fmt(r["frac_g_above_half"], 1),
        _fmt(r.get("memorised_mean"), 1),
    ]
    if has_paper:
        cells += [_fmt(r.get("paper_mean"), 3), _fmt(r.get("paper_std"), 3)]
    return cells
