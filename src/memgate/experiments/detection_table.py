"""A grid's detection results over seeds, for `memgate report`: noisy-label detection AUROC of every
score (from each run's signals, recomputed here) and, where `memgate ood` was run, OOD AUROC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.detection import detection_table, scores
from ..markdown import table as md_table
from ..train.rundir import DETECTION, OOD, SIGNALS, present, read_analysis, read_run_arrays

# Columns of the noisy-label table, in order, when present in a run.
NOISE_COLUMNS = (
    "g_final_b3",
    "g_mean_b3",
    "gate_entropy_b3_final",
    "gate_loss_b3_final",
    "loss_final",
    "loss_mean",
    "neg_aum",
    "forgetting",
    "first_learned",
    "cleanlab",
)


def _mean_std(values: list[float], n: int | None = None) -> str:
    """mean ± std of a cell; ``(n=k)`` when it has fewer seeds than its row's ``n``."""
    if not values:
        return "-"
    std = f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""
    fewer = f" (n={len(values)})" if n is not None and len(values) < n else ""
    return f"{np.mean(values):.3f}{std}{fewer}"


def noise_rows(meta: dict[str, Any], results: dict[str, list[dict]]) -> tuple[list[str], dict[str, dict[str, list]]]:
    """(columns, {variant: {score: [AUROC per seed]}}) for variants whose runs have injected noise:
    recomputed from each run's signals, or, for a run kept without its npz files, read from the
    detection.json that `memgate analyze` wrote into it."""
    table: dict[str, dict[str, list]] = {}
    for v in meta["variants"]:
        for r in results.get(v["name"], []):
            run = Path(r["run"])
            if not r.get("noisy_train"):
                continue
            if present(run, SIGNALS):
                sig, gates = read_run_arrays(run)
                det = detection_table(scores(sig, gates), sig["noisy"].astype(bool))
            elif (saved := read_analysis(run, DETECTION, "analyze")) is not None:
                det = saved["scores"]
            else:
                continue
            for k, d in det.items():
                table.setdefault(v["name"], {}).setdefault(k, []).append(d["auroc"])
    shown = {k for row in table.values() for k in row}
    return [c for c in NOISE_COLUMNS if c in shown], table


def detection_markdown(meta: dict[str, Any], results: dict[str, list[dict]]) -> list[str]:
    cols, table = noise_rows(meta, results)
    lines: list[str] = []
    if table:
        lines += [
            "## Noisy-label detection (AUROC, mean ± std over seeds)",
            "",
            "Each score ranks the training samples (higher = more suspicious) against the injected-noise mask; "
            "0.5 is chance. g and the gate scores exist for gated runs only; compare a gated run's g with the "
            "baseline run's loss, -AUM and forgetting at the same noise level.",
            "",
            *md_table(
                ["variant", "n", *cols],
                (
                    [name, (n := max(len(v) for v in row.values())), *(_mean_std(row.get(c, []), n) for c in cols)]
                    for name, row in table.items()
                ),
            ),
            "",
        ]
        if "cleanlab" in cols:
            lines += [
                "cleanlab's label-quality score (the final softmax's probability of the given label) orders the "
                "samples as the final-epoch loss does (-log of that probability), so its AUROC is loss_final's; "
                "a cell with fewer seeds than its row says (n=k).",
                "",
            ]
    lines += _ood_markdown(meta, results)
    return lines


def _ood_markdown(meta: dict[str, Any], results: dict[str, list[dict]]) -> list[str]:
    agg: dict[tuple[str, str], dict[str, list[float]]] = {}
    for v in meta["variants"]:
        for r in results.get(v["name"], []):
            result = read_analysis(r["run"], OOD, "ood")
            for src, res in (result or {}).get("ood", {}).items():
                for k, d in res["scores"].items():
                    agg.setdefault((v["name"], Path(src).name), {}).setdefault(k, []).append(d["auroc"])
    if not agg:
        return []
    cols = sorted({k for row in agg.values() for k in row})
    rows = ([name, src, *(_mean_std(row.get(c, [])) for c in cols)] for (name, src), row in agg.items())
    return [
        "## Out-of-distribution detection (AUROC, mean ± std over seeds)",
        "",
        *md_table(["variant", "OOD set", *cols], rows),
        "",
    ]
