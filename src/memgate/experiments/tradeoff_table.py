"""A grid's accuracy-vs-compute results, for `memgate report`: every run's tradeoff.json (written by
`memgate tradeoff` into the run) as one table and one figure, so gate variants and seeds compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..analysis.figures import colormap, save, subplots
from ..markdown import table
from ..train.rundir import TRADEOFF, read_analysis

PNG = "tradeoff_all.png"


def tradeoff_runs(meta: dict[str, Any], results: dict[str, list[dict]]) -> list[tuple[str, int, dict]]:
    """(variant, seed, tradeoff result) for every finished run on which `memgate tradeoff` was run."""
    found = []
    for v in meta["variants"]:
        for r in results.get(v["name"], []):
            res = read_analysis(r["run"], TRADEOFF, "tradeoff")
            if res is not None:
                found.append((v["name"], r["seed"], res))
    return found


def tradeoff_markdown(
    meta: dict[str, Any], results: dict[str, list[dict]], out_dir: Path
) -> tuple[list[str], list[str]]:
    """(markdown lines, figure names) of the accuracy-vs-compute section; empty when no run has one."""
    runs = tradeoff_runs(meta, results)
    if not runs:
        return [], []
    sizes = _batch_sizes(runs)
    head = ["variant", "seed", "soft gate", "full routing", "all skipped", "MACs skipped at most"]
    head += ["--max-drop: tau", "test acc", "MACs", "by g / random, same share"]
    head += [f"measured x, batch {b}" for b in sizes]
    lines = [
        "## Accuracy against compute (hard gate, `memgate tradeoff`)",
        "",
        "Test accuracy (%) with the soft gate, with every sample routed through the extra layers (tau = 0) "
        "and with none (all skipped); the threshold chosen on validation by `--max-drop` (on a fixed half of the "
        "test split for a run without validation: see the notes) with its test accuracy, MACs (% of the full "
        "network), the whole test split's accuracy at that tau beside the random-routing control (the same "
        "share of images on each route, chosen at random: is it g that picks well?) and measured speedup over "
        "the full network (timings are this machine's).",
        "",
        *table(head, ([name, seed, *_cells(res, sizes)] for name, seed, res in runs)),
    ]
    notes = [f"- {name} seed {seed}: {text}" for name, seed, res in runs if (text := _notes(res))]
    lines += ["", *notes] if notes else []
    refs = {b["run"]: b for _, _, res in runs for b in res.get("references", [])}
    if refs:
        timed = any(_measured(b, sizes) for b in refs.values())
        lines += [
            "",
            "References (no skipping"
            + ("; measured: speedup over the full gated network, timed beside it" if timed else "")
            + "): "
            + "; ".join(
                f"{b['label']} {100 * b['test_acc']:.2f}% at {b['macs'] / 1e6:.2f}M MACs{_measured(b, sizes)} ({run})"
                for run, b in refs.items()
            ),
        ]
    _plot(runs, list(refs.values()), sizes, out_dir / PNG)
    return [*lines, ""], [PNG]


def _notes(res: dict) -> str:
    """What the table's row cannot show: where tau was chosen if not on validation, the run's note."""
    chosen_on = (res.get("chosen") or {}).get("chosen_on")
    return "; ".join(x for x in (f"tau chosen on {chosen_on}" if chosen_on else "", res.get("note") or "") if x)


def _batch_sizes(runs: list[tuple[str, int, dict]]) -> list[int]:
    keys = {k for _, _, res in runs for k in res["full_network"]}
    return sorted(int(k.rsplit("_b", 1)[1]) for k in keys)


def _speedup(point: dict, b: int) -> float | None:
    """A point's (or a reference's) measured speedup over the full network at batch size ``b``."""
    return point.get("speedup", {}).get(str(b))  # JSON keys are strings


def _measured(ref: dict, sizes: list[int]) -> str:
    """ ", measured 2.90x / 3.10x (batch 1 / 256)": a reference's speedup over the full gated network."""
    xs = [_speedup(ref, b) for b in sizes]
    if any(x is None for x in xs):
        return ""
    return f", measured {' / '.join(f'{x:.2f}x' for x in xs)} (batch {' / '.join(map(str, sizes))})"


def _cells(res: dict, sizes: list[int]) -> list[str]:
    pts = sorted(res["points"], key=lambda p: p["tau"])
    full, skip = pts[0], pts[-1]
    saved = 1 - skip["test_macs"] / res["macs_full"]
    cells = [f"{100 * res['soft_gate']['test_acc']:.2f}", f"{100 * full['test_acc']:.2f}"]
    cells += [f"{100 * skip['test_acc']:.2f}", f"{100 * saved:.1f}%"]
    chosen = res.get("chosen")
    if chosen is None:
        return cells + ["-"] * (4 + len(sizes))
    point = next(p for p in pts if p["tau"] == chosen["tau"])
    random = point.get("random_test_acc")  # absent from files older than the control
    cells += [
        f"{chosen['tau']:g}",
        f"{100 * chosen['test_acc']:.2f}",
        f"{100 * chosen['macs'] / res['macs_full']:.1f}%",
        f"{100 * point['test_acc']:.2f} / " + (f"{100 * random:.2f}" if random is not None else "-"),
    ]
    return cells + [f"{x:.2f}" if (x := _speedup(point, b)) else "-" for b in sizes]


def _plot(runs: list[tuple[str, int, dict]], refs: list[dict], sizes: list[int], png: Path) -> None:
    """Accuracy vs MACs, and vs measured speedup at each batch size: one colour per variant, one line per seed."""
    fig, axes = subplots(1, 1 + len(sizes), figsize=(5.5 * (1 + len(sizes)), 4.5))
    names = list(dict.fromkeys(name for name, _, _ in runs))
    cmap = colormap("tab10")
    labelled: set[str] = set()
    for name, seed, res in runs:
        pts = sorted(res["points"], key=lambda p: p["tau"])
        acc = [100 * p["test_acc"] for p in pts]
        style = {"color": cmap(names.index(name) % 10), "ls": "-" if seed % 2 == 0 else "--", "marker": "o", "ms": 3}
        label = name if name not in labelled else "_nolegend_"  # one entry per variant; seeds differ by line style
        labelled.add(name)
        axes[0].plot([p["test_macs"] / 1e6 for p in pts], acc, label=label, **style)
        if all(p.get("random_test_acc") is not None for p in pts):  # the control routes the same shares: same MACs
            random = [100 * p["random_test_acc"] for p in pts]
            axes[0].plot([p["test_macs"] / 1e6 for p in pts], random, color=style["color"], ls=":", lw=1)
        for ax, b in zip(axes[1:], sizes):
            ax.plot([_speedup(p, b) or float("nan") for p in pts], acc, label=label, **style)
    markers = {label: m for label, m in zip(dict.fromkeys(r["label"] for r in refs), "*^vDPXhp<>" * 4)}
    for ref in refs:
        label = ref["label"] if ref["label"] not in labelled else "_nolegend_"
        labelled.add(ref["label"])
        marker = markers.get(ref["label"], "x")
        axes[0].plot(ref["macs"] / 1e6, 100 * ref["test_acc"], marker, ms=10, color="k", label=label)
        for ax, b in zip(axes[1:], sizes):  # timed beside a gated run's full network (older files: not timed)
            if (x := _speedup(ref, b)) is not None:
                ax.plot(x, 100 * ref["test_acc"], marker, ms=10, color="k")
    axes[0].set(xlabel="mean MACs per image (millions)", ylabel="test accuracy (%)", title="accuracy vs compute")
    for ax, b in zip(axes[1:], sizes):
        ax.axvline(1.0, color="grey", ls=":")
        ax.set(xlabel="measured speedup over the full network", ylabel="test accuracy (%)", title=f"batch {b}")
    axes[0].legend(fontsize=7)
    save(
        fig,
        png,
        "hard gate: accuracy against compute and measured time (tau swept; solid: even seeds, dashed: odd; "
        "dotted: the same shares routed at random)",
        10,
    )
