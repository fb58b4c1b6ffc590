"""`memgate tradeoff RUN`: accuracy against compute and wall-clock when a hard gate really skips.

For each threshold tau, a sample runs a gated stage's extra layers only when its g >= tau (every
gate routes, B2 and B3 alike; a gate reads o1, so it decides before those layers). Reported per tau:
test (and validation) accuracy, the share of samples routed through each gated stage, the mean MACs
per image (gate heads included, skipped layers excluded, per sample), and measured throughput of
real routing against the full network at each batch size (warm-up, median of repeats). A gate that
reads o2 (the released code) needs the extra layers' output to compute g: it can skip nothing.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json, write_text
from ..config import load_config
from ..errors import ConfigError, RunError
from ..models import architecture_summary, macs_per_stage
from ..outputs import claim, record, run_folder
from ..train import checkpoint as ckpt_io
from ..train.evaluate import SavedRun, open_run, predict
from ..train.rundir import CHECKPOINT, CONFIG, TRADEOFF, read_summary
from .figures import colormap, save, subplots
from .timing import time_reference, timing_batches, timings

DEFAULT_TAUS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.01)


def per_sample_macs(total: int, skippable: dict[int, int], routed: dict[int, np.ndarray]) -> np.ndarray:
    """MACs of each sample: the full network minus the extra layers of every stage it skipped."""
    return float(total) - sum(skippable[s] * (1.0 - r.astype(np.float64)) for s, r in routed.items())


def _point(r: SavedRun, x: np.ndarray, y: np.ndarray, tau: float, total: int, skip: dict[int, int]) -> dict:
    out = predict(r, x, g_mode="hard", tau=tau)
    routed = {s: g.numpy() >= 0.5 for s, g in out.g.items()}  # hard mode: g is 1 where routed
    return {
        "acc": float((out.logits.argmax(1).numpy() == y).mean()),
        "routed": {s: float(v.mean()) for s, v in routed.items()},
        "patterns": route_patterns(routed),
        "macs": float(per_sample_macs(total, skip, routed).mean()),
    }


def route_patterns(routed: dict[int, np.ndarray]) -> dict[str, float]:
    """Share of the samples on each joint route: one digit per gated stage in stage order, 1 where
    the sample ran that stage's extra layers ("10": B2's, not B3's)."""
    keys = np.stack([routed[s] for s in sorted(routed)], 1).astype(np.int8)
    return {"".join(map(str, k)): float(n) / len(keys) for k, n in zip(*np.unique(keys, axis=0, return_counts=True))}


def _random_control(r: SavedRun, test: tuple[np.ndarray, np.ndarray], rows: list[dict]) -> None:
    """Does g pick well? Adds ``random_test_acc`` to every point: each joint route (`route_patterns`)
    given to the same share of test images chosen at random. In eval mode an image's prediction
    depends on its own route only, so that is exactly the sum over routes of share x accuracy with
    every image on the route (one gate: share x acc(all routed) + (1 - share) x acc(none routed))."""
    x, y = test
    stages = sorted(r.cfg.model.gates)
    acc = {}
    for key in {k for row in rows for k in row["test_patterns"]}:
        taus = {s: -np.inf if bit == "1" else np.inf for s, bit in zip(stages, key)}  # every image / none
        acc[key] = float((predict(r, x, g_mode="hard", tau=taus).logits.argmax(1).numpy() == y).mean())
    for row in rows:
        row["random_test_acc"] = sum(share * acc[k] for k, share in row["test_patterns"].items())


def _check_flags(taus: tuple[float, ...], max_drop: float | None, repeats: int) -> None:
    if max_drop is not None and (not np.isfinite(max_drop) or max_drop < 0):
        raise ConfigError(f"tradeoff: --max-drop {max_drop} must be a finite number of points >= 0")
    if repeats < 1:
        raise ConfigError(f"tradeoff: --repeats {repeats} must be at least 1")
    if max_drop is not None and 0.0 not in taus:
        raise ConfigError("tradeoff: --max-drop compares against full routing, so --thresholds must include 0")


def _check_run(r: SavedRun, run: str | Path, references: list[dict], max_drop: float | None) -> None:
    """A gate that can route (it reads o1), references of the same dataset, validation data for --max-drop."""
    other = [b["run"] for b in references if b["data"] != r.dataset.name]
    if other:
        raise ConfigError(
            f"tradeoff: --baseline {other[0]} was trained on another dataset than {run}; compare like with like"
        )
    if not r.cfg.model.gates:
        raise RunError(
            f"tradeoff: {run} has no gate; there is nothing to route (pass a gated run, --baseline for this one)"
        )
    if r.cfg.gate.input != "first_unit":
        raise RunError(
            f"tradeoff: the gate of {run} reads o2 (gate.input=output, the released code): g is known only after "
            "the extra layers ran, so a hard gate can skip nothing; train with gate.input=first_unit"
        )
    source = ckpt_io.imported_ancestor(r.cfg.train.init) if max_drop is not None and len(r.data.val_y) else None
    if source is not None:
        raise ConfigError(
            f"tradeoff: --max-drop would choose tau on {run}'s validation split, but the network it started "
            f"from ({source}, imported) trained on those images; retrain with data.val_size=0 (tau is then "
            "chosen on half of the test split) or leave out --max-drop"
        )


def tradeoff(
    run: str | Path,
    baselines: tuple[str | Path, ...] = (),
    taus: tuple[float, ...] = DEFAULT_TAUS,
    batch_sizes: tuple[int, ...] = (1, 256),
    max_drop: float | None = None,
    repeats: int = 3,
    out: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
    note: str = "",
) -> str:
    """Sweep tau through a skip-capable gate; writes tradeoff.csv/json/png into ``out`` (default: the run),
    after every input (the run, each ``--baseline``, ``max_drop``) has been checked. ``note`` (e.g.
    "timings invalid: ran beside other work") is kept in tradeoff.json and written on the figure."""
    _check_flags(taus, max_drop, repeats)
    references = [_reference_point(b) for b in baselines]  # a bad --baseline fails before any output
    r = open_run(run, device=device)
    _check_run(r, run, references, max_drop)
    total, skip = macs_per_stage(r.net)
    test = (r.dataset.x_test, r.dataset.y_test)
    val, report = _choice_sets(r, test, max_drop)
    timed = {b: timing_batches(r, test[0], b) for b in batch_sizes}
    rows = []
    sizes = ", ".join(str(b) for b in batch_sizes)
    for i, tau in enumerate(taus, 1):
        print(f"tradeoff: tau {tau:g} ({i} of {len(taus)}): accuracy, then timing at batch {sizes}", flush=True)
        row: dict[str, Any] = {"tau": tau, **{f"test_{k}": v for k, v in _point(r, *test, tau, total, skip).items()}}
        for key, data in (("val_acc", val), ("report_acc", report)):
            if data is not None:
                row[key] = _point(r, *data, tau, total, skip)["acc"]
        rows.append(row | timings(r, timed, tau, repeats))
    for ref in references:
        print(f"tradeoff: timing --baseline {ref['run']} beside the full network", flush=True)
        time_reference(ref, r, test[0], batch_sizes, repeats)
    # the full network's rate: median over every point's paired full passes
    full = {f"images_per_s_b{b}": float(np.median([p["full_images_per_s"][b] for p in rows])) for b in batch_sizes}
    soft = predict(r, test[0], g_mode="soft")
    _random_control(r, test, rows)
    result = {
        "run": str(run),
        "note": note,
        "macs_full": total,
        "macs_skippable": skip,
        "full_network": full,
        "soft_gate": {"test_acc": float((soft.logits.argmax(1).numpy() == test[1]).mean()), "macs": total},
        "points": rows,
        "references": references,
    }
    if max_drop is not None:
        result["chosen"] = choose_tau(rows, max_drop)
        if report is not None:
            result["chosen"]["chosen_on"] = (
                f"test half A ({len(val[1]):,d} images, the run has no validation split); test_acc is "
                f"half B's ({len(report[1]):,d})"
            )
    out_dir = claim(out or run_folder(run), run, "tradeoff", force)
    text = _write(result, out_dir, batch_sizes)
    record(out_dir, run, "tradeoff")
    return text


def _choice_sets(r: SavedRun, test: tuple[np.ndarray, np.ndarray], max_drop: float | None) -> tuple:
    """(images, labels) that choose tau, and those that report it (None: the test split). A run that
    trained on every training image has no validation split: test half A chooses, half B reports."""
    if len(r.data.val_y):
        return (r.data.val_x.cpu().numpy(), r.data.val_y.cpu().numpy()), None
    if max_drop is None:
        return None, None
    a, b = halves_of_test(len(test[1]))
    return (test[0][a], test[1][a]), (test[0][b], test[1][b])


def halves_of_test(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random split of the test set into halves A (chooses tau) and B (reports it), for runs
    trained on every training image (no validation split): the same halves for every run."""
    order = np.random.default_rng(0).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def choose_tau(rows: list[dict], max_drop: float) -> dict:
    """The smallest-compute tau whose validation accuracy is within ``max_drop`` points of full routing
    (tau = 0); the test set plays no part in the choice (without a validation split: test half A
    chooses, half B's accuracy, ``report_acc``, is reported)."""
    ref = next(r for r in rows if r["tau"] == min(x["tau"] for x in rows))["val_acc"]
    ok = [r for r in rows if 100 * (ref - r["val_acc"]) <= max_drop + 1e-9]  # points, float-safe
    best = min(ok, key=lambda r: (r["test_macs"], -r["val_acc"]))
    return {
        "max_drop_points": max_drop,
        "tau": best["tau"],
        "val_acc": best["val_acc"],
        "full_val_acc": ref,
        "test_acc": best.get("report_acc", best["test_acc"]),
        "macs": best["test_macs"],
    }


def _reference_point(run: str | Path) -> dict:
    """A finished run drawn as one point beside the curve: the ungated network, or a soft gate (no
    skipping); or an imported public network (`memgate import`), evaluated here on its test split."""
    folder = run_folder(run)  # a run's folder, or its checkpoint.pt
    s = read_summary(folder)
    if s is None and (folder / CHECKPOINT).is_file() and ckpt_io.load(folder).get("imported_from"):
        return _imported_point(folder)
    if s is None:
        raise RunError(f"tradeoff: --baseline {run} is not a finished run (no summary.json)")
    cfg = load_config(folder / CONFIG)
    label = "ungated"
    if cfg.model.gates:
        reads = "o2" if cfg.gate.input == "output" else "o1"
        label = f"soft gate over {'+'.join(f'B{g}' for g in cfg.model.gates)} reading {reads}"
    return {
        "run": str(run),
        "label": label,
        "test_acc": s["final_test_acc"],
        "macs": s["macs"],
        "data": s.get("dataset", cfg.data.dataset),  # the data it trained on, by class count and name
    }


def _imported_point(run: str | Path) -> dict:
    r = open_run(run)
    acc = float((predict(r, r.dataset.x_test).logits.argmax(1).numpy() == r.dataset.y_test).mean())
    arch = architecture_summary(r.net)
    label = f"ResNet-{arch['depth']} (public weights)"
    return {"run": str(run), "label": label, "test_acc": acc, "macs": arch["macs"], "data": r.dataset.name}


def _write(result: dict, out_dir: Path, batch_sizes: tuple[int, ...]) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = result["points"]
    stages = sorted(rows[0]["test_routed"])
    cols = ["tau", "test_acc", "random_test_acc", "val_acc", *[f"routed_b{s}" for s in stages], "macs", "macs_ratio"]
    cols += [f"images_per_s_b{b}" for b in batch_sizes] + [f"speedup_b{b}" for b in batch_sizes]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(
            [
                r["tau"],
                r["test_acc"],
                r["random_test_acc"],
                r.get("val_acc", ""),
                *[r["test_routed"][s] for s in stages],
                r["test_macs"],
                r["test_macs"] / result["macs_full"],
                *[r[f"images_per_s_b{b}"] for b in batch_sizes],
                *[r["speedup"][b] for b in batch_sizes],
            ]
        )
    write_text(out_dir / "tradeoff.csv", buf.getvalue())
    write_json(out_dir / TRADEOFF, result)
    _plot(result, out_dir / "tradeoff.png", batch_sizes)
    return _text(result, batch_sizes, out_dir)


def _text(result: dict, batch_sizes: tuple[int, ...], out_dir: Path) -> str:
    w = 5 * len(result["points"][0]["test_routed"]) - 1 + 2  # "100%" per gated stage, "/" between
    head = f"  tau   test acc  random  {'routed':>{w}s}    MACs/img  ideal x  " + "  ".join(
        f"measured x (b={b})" for b in batch_sizes
    )
    lines = [
        f"{result['run']}: full network {result['macs_full']:,d} MACs, soft gate test acc "
        f"{100 * result['soft_gate']['test_acc']:.2f}%",
        head,
    ]
    slower = set()
    for r in result["points"]:
        ideal = result["macs_full"] / r["test_macs"]
        routed = "/".join(f"{100 * v:.0f}%" for v in r["test_routed"].values())
        meas = "  ".join(f"{r['speedup'][b]:>17.2f}" for b in batch_sizes)
        slower |= {b for b in batch_sizes if r["speedup"][b] < 1 and r["test_macs"] < result["macs_full"]}
        acc, macs = f"{100 * r['test_acc']:7.2f}%", f"{r['test_macs']:>9,.0f}"
        rand = f"{100 * r['random_test_acc']:5.2f}%"
        lines.append(f"  {r['tau']:<5.2f} {acc}  {rand}  {routed:>{w}s}  {macs}  {ideal:6.2f}  {meas}")
    for b in sorted(slower):
        lines.append(
            f"  note: at batch size {b}, real routing is SLOWER than the full network at some tau "
            "(the gather of hard samples costs more than the layers it skips)"
        )
    if "chosen" in result:
        c = result["chosen"]
        lines.append(
            f"  --max-drop {c['max_drop_points']}: tau {c['tau']} (val {100 * c['val_acc']:.2f}% vs "
            f"{100 * c['full_val_acc']:.2f}% full) -> test {100 * c['test_acc']:.2f}% at "
            f"{100 * c['macs'] / result['macs_full']:.1f}% of the MACs"
            + (f" (chosen on {c['chosen_on']})" if "chosen_on" in c else "")
        )
    for ref in result["references"]:
        meas = ", ".join(f"{ref['speedup'][b]:.2f}x at batch {b}" for b in batch_sizes)
        lines.append(
            f"  reference {ref['label']}: {100 * ref['test_acc']:.2f}% at {ref['macs'] / 1e6:.2f}M MACs "
            f"({100 * ref['macs'] / result['macs_full']:.0f}% of the full network's), measured {meas} ({ref['run']})"
        )
    lines.append(f"  tradeoff.csv, tradeoff.json, tradeoff.png in {out_dir}")
    return "\n".join(lines)


def _plot(result: dict, png: Path, batch_sizes: tuple[int, ...]) -> None:
    fig, axes = subplots(1, 1 + len(batch_sizes), figsize=(5.5 * (1 + len(batch_sizes)), 4.5))
    pts = result["points"]
    acc = [100 * p["test_acc"] for p in pts]
    ax = axes[0]
    ax.plot([p["test_macs"] / 1e6 for p in pts], acc, "o-", label="hard gate, tau swept")
    rand = [100 * p["random_test_acc"] for p in pts]
    ax.plot([p["test_macs"] / 1e6 for p in pts], rand, ":", color="grey", label="same share routed at random")
    ax.plot(result["macs_full"] / 1e6, 100 * result["soft_gate"]["test_acc"], "s", label="soft gate (no skipping)")
    refs = list(zip(result["references"], "*^vDPXhp<>" * 4, colormap("tab10").colors[2:] * 4))  # one marker each
    for ref, marker, colour in refs:
        ax.plot(ref["macs"] / 1e6, 100 * ref["test_acc"], marker, color=colour, ms=10, label=ref["label"])
    ax.set(xlabel="mean MACs per image (millions)", ylabel="test accuracy (%)", title="accuracy vs compute")
    ax.legend(fontsize=8)
    for ax, b in zip(axes[1:], batch_sizes):
        # Measured points with the spread of their timed repeats; no line: tau order is not speed order.
        x = np.array([p[f"images_per_s_b{b}"] for p in pts])
        spread = [p.get("images_per_s_range", {}).get(str(b), p.get("images_per_s_range", {}).get(b)) for p in pts]
        if all(s is not None for s in spread):
            err = np.array([[xi - lo, hi - xi] for xi, (lo, hi) in zip(x, spread)]).T.clip(0)
            ax.errorbar(x, acc, xerr=err, fmt="o", capsize=3, label="hard gate, tau swept (measured, range of repeats)")
        else:
            ax.plot(x, acc, "o", label="hard gate, tau swept (measured)")
        ax.axvline(result["full_network"][f"images_per_s_b{b}"], color="grey", ls="--", label="full network")
        for ref, marker, colour in refs:  # the same references, timed beside the full network
            ax.plot(ref["images_per_s"][b], 100 * ref["test_acc"], marker, color=colour, ms=10, label=ref["label"])
        ax.set(xlabel="images / s (measured)", ylabel="test accuracy (%)", title=f"accuracy vs throughput, batch {b}")
        ax.legend(fontsize=8)
    title = f"{'/'.join(Path(result['run']).parts[-2:])}: accuracy against compute and time"
    save(fig, png, title + (f"\nNOTE: {result['note']}" if result.get("note") else ""), 10)
