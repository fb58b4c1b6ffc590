"""The held-out study's tables (issue 22), machine-written from the committed files beside this one:
holdout.json (the clean plan's stability), models/results.csv (the K models' test accuracy), each
gated run's analysis against 1 - C-score (gated_clean_seed<s>/external_scores.json) and against the
memorisation estimate (gated_clean_seed<s>/memorisation/external_scores.json), the 4-fold noisy
plan's folds/holdout.json, and results/noise's detection.json of the same noisy data (in-sample).
Writes report.md beside this file. From the repository root: python results/holdout/report.py"""

import csv
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOISE = HERE.parent / "noise"
SCORES = {
    "g_final_b3": "final g",
    "g_mean_b3": "mean g over epochs",
    "loss_final": "final loss",
    "loss_mean": "mean loss",
    "neg_aum": "-AUM",
    "forgetting": "forgetting events",
    "first_learned": "first epoch learned",
    "neg_confidence": "-confidence (cartography)",
    "variability": "variability (cartography)",
    "gate_entropy_b3_final": "gate entropy (final)",
    "gate_loss_b3_mean": "gate head's mean loss (label-aware)",
    "cleanlab": "cleanlab on the in-sample final softmax",
}
IN_SAMPLE = {
    "g_final_b3": "final g",
    "loss_mean": "mean loss",
    "neg_aum": "-AUM",
    "forgetting": "forgetting events",
    "cleanlab": "cleanlab on the final softmax",
}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"


def header() -> list[str]:
    h = load(HERE / "holdout.json")
    accs = [float(r["test_acc_mean"]) for r in csv.DictReader((HERE / "models" / "results.csv").open())]
    mean = sum(accs) / len(accs)
    return [
        "# Held-out C-score and memorisation estimates against g and the proxies (machine-written by report.py)",
        "",
        f"Clean plan: {h['models']} ResNet-20 models on the 10k CIFAR-10 subset, each sample held out by "
        f"{h['heldout_count'][0]}-{h['heldout_count'][1]} of them; the models' test accuracy "
        f"{100 * min(accs):.2f}-{100 * max(accs):.2f}% (mean {100 * mean:.2f}%).",
        f"Stability: Spearman between the C-score estimates of the even and the odd models: "
        f"{h['split_half_spearman']:.3f} (over {h['split_half_n']:,d} samples).",
        "",
    ]


def spearman_table(name: str, file: str) -> list[str]:
    runs = sorted(p for p in HERE.glob("gated_clean_seed*") if (p / file).exists())
    res = {r.name: load(r / file) for r in runs}
    cols = " | ".join(f"{r} overall | {r} within class" for r in res)
    lines = [f"## Spearman with {name}", "", f"| score | {cols} |", "|---" * (1 + 2 * len(res)) + "|"]
    for key, label in SCORES.items():
        cells = []
        for r in res.values():
            cells += [fmt(r["spearman"].get(key)), fmt(r["spearman_within_class"].get(key, {}).get("mean"))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def folds_table() -> list[str]:
    f = load(HERE / "folds" / "holdout.json")
    lines = [
        "## The wrong labels of 20% symmetric noise: out-of-sample (4 folds) against in-sample (same data)",
        "",
        "| score | AUROC |",
        "|---|---|",
    ]
    lines += [f"| {k} (4-fold, out of sample) | {v:.3f} |" for k, v in f["noisy_auroc"].items()]
    for run in ("gated_sym20_seed0", "gated_sym20_seed1", "baseline_sym20_seed0", "baseline_sym20_seed1"):
        det = load(NOISE / run / "detection.json")["scores"]
        for key, label in IN_SAMPLE.items():
            if key in det:
                lines.append(f"| {label} (in-sample, results/noise/{run}) | {det[key]['auroc']:.3f} |")
    return lines + [""]


def main() -> None:
    lines = header()
    lines += spearman_table(
        "1 - C-score (held-out error; higher = less predictable without the sample)", "external_scores.json"
    )
    lines += spearman_table(
        "the memorisation estimate (in-sample minus held-out accuracy)", "memorisation/external_scores.json"
    )
    lines += folds_table()
    (HERE / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
