"""bf16 vs fp32 on the noise grid's clean variants (issue 19): test accuracy and final mean g.

    python results/bf16_parity/compare.py runs/bf16_parity > results/bf16_parity/parity.md

fp32: the committed results/noise/results.csv (2 seeds: mean and sample std). bf16: the summaries
of runs/bf16_parity (written to bf16_runs.csv beside this file, so the table can be rebuilt from
committed files alone: `python results/bf16_parity/compare.py` without an argument reads it).
Welch's t-test from the two groups' mean, std and n.
"""

import csv
import json
import statistics
import sys
from pathlib import Path

from scipy.stats import ttest_ind_from_stats

HERE = Path(__file__).resolve().parent
FP32 = HERE.parent / "noise" / "results.csv"
BF16 = HERE / "bf16_runs.csv"
VARIANTS = ("gated_clean", "baseline_clean")


def bf16_rows(runs: Path | None) -> list[dict]:
    if runs is None:
        with open(BF16) as f:
            return [dict(r, seed=int(r["seed"]), test_acc=float(r["test_acc"])) for r in csv.DictReader(f)]
    rows = []
    for v in VARIANTS:
        for s in sorted((runs / v).glob("seed*/summary.json")):
            d = json.loads(s.read_text())
            assert d["precision"] == "bf16", s
            rows.append(
                {
                    "variant": v,
                    "seed": int(s.parent.name[4:]),
                    "test_acc": d["final_test_acc"],
                    "g_mean": d.get("final_g_mean") or "",
                    "train_time_s": round(d["train_time_s"]),
                }
            )
    with open(BF16, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def main() -> None:
    rows = bf16_rows(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    with open(FP32) as f:
        fp32 = {r["variant"]: r for r in csv.DictReader(f)}
    print(
        "| variant | fp32 test % (mean ± std, 2 seeds) | bf16 test % (seeds 0, 1) | bf16 mean ± std | "
        "bf16 - fp32 | Welch p | fp32 mean g | bf16 mean g |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for v in VARIANTS:
        b = [r for r in rows if r["variant"] == v]
        acc = [100 * float(r["test_acc"]) for r in b]
        m, sd = statistics.mean(acc), statistics.stdev(acc)
        fm, fs, fn = 100 * float(fp32[v]["test_acc_mean"]), 100 * float(fp32[v]["test_acc_std"]), int(fp32[v]["n"])
        p = ttest_ind_from_stats(m, sd, len(acc), fm, fs, fn, equal_var=False).pvalue
        g_fp = f"{float(fp32[v]['g_mean']):.3f}" if fp32[v]["g_mean"] else "-"
        g_bf = [float(r["g_mean"]) for r in b if r["g_mean"] not in ("", None)]
        g_bf_s = f"{statistics.mean(g_bf):.3f}" if g_bf else "-"
        seeds = ", ".join(f"{a:.2f}" for a in acc)
        cells = [v, f"{fm:.2f} ± {fs:.2f}", seeds, f"{m:.2f} ± {sd:.2f}", f"{m - fm:+.2f}", f"{p:.2f}", g_fp, g_bf_s]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
