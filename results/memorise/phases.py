"""AUROC for the wrong labels through memorisation, from the committed files of results/memorise:
each run's detection.json (per-epoch AUROC) and metrics.jsonl (share of the wrong labels fitted).
Writes phases.md beside this file. From the repository root: python results/memorise/phases.py"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCORES = ["g_b3", "loss", "neg_aum_to_epoch", "forgetting_to_epoch", "neg_confidence_to_epoch", "variability_to_epoch"]


def phases(fitted: list[float]) -> list[tuple[str, int]]:
    """(phase, 1-based epoch): epoch 10 (before), the first epoch with >= 50% and >= 90% of the
    wrong labels fitted (during), the last epoch (after)."""
    first = lambda share: next(e for e, f in enumerate(fitted, 1) if f >= share)  # noqa: E731
    return [("epoch 10", 10), ("50% fitted", first(0.5)), ("90% fitted", first(0.9)), ("end", len(fitted))]


def main() -> None:
    lines = ["# AUROC for the wrong labels through memorisation (machine-written by phases.py)", ""]
    lines += ["| run | phase | epoch | wrong labels fitted | " + " | ".join(SCORES) + " |"]
    lines += ["|---" * (4 + len(SCORES)) + "|"]
    for run in sorted(p for p in HERE.iterdir() if (p / "detection.json").exists()):
        curves = json.loads((run / "detection.json").read_text())["auroc_per_epoch"]
        fitted = [json.loads(line)["train_acc_noisy"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        for name, e in phases(fitted):
            cells = [f"{curves[k][e - 1]:.3f}" if k in curves else "-" for k in SCORES]
            lines.append(f"| {run.name} | {name} | {e} | {100 * fitted[e - 1]:.1f}% | " + " | ".join(cells) + " |")
    (HERE / "phases.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
