"""Every committed seed of the ResNet-20 full-scale study, from the per-run files beside this one
(<variant>_seed<s>/summary.json and metrics.jsonl): test accuracy per seed, mean ± std, the
difference against (a) ungated with Welch's test (memgate's own `welch`), whether it holds in every
same-seed pair, mean g and last-epoch training accuracy. report.md is `memgate report` of the run
folders it had (seeds 0-1); this table also holds the seeds trained since. Writes seeds.md beside
this file. From the repository root: .venv/bin/python results/pretrained/r20/seeds.py"""

import json
import statistics
from pathlib import Path

from memgate.experiments.report import welch

HERE = Path(__file__).resolve().parent
VARIANTS = {"ungated": "(a) ungated", "gate_o2": "(b) released-code gate (o2)", "gate_o1": "(c) o1 gate"}


def runs(variant: str) -> dict[int, dict]:
    """{seed: {"acc", "g", "train_acc"}} of the committed runs of ``variant``."""
    out = {}
    for d in sorted(HERE.glob(f"{variant}_seed*")):
        if (d / "summary.json").exists():
            summary = json.loads((d / "summary.json").read_text())
            last = json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])
            seed = int(d.name.rsplit("seed", 1)[1])
            out[seed] = {
                "acc": 100 * summary["final_test_acc"],
                "g": summary["final_g_mean"],
                "train": last["train_acc"],
            }
    return out


def main() -> None:
    base = runs("ungated")
    lines = [
        "# ResNet-20 from the public weights, every committed seed (machine-written by seeds.py)",
        "",
        "| variant | test accuracy per seed (%) | mean ± std | vs (a) [95% CI] | Welch p | below (a), seed pairs |"
        " mean g per seed | training accuracy per seed (%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in VARIANTS.items():
        r = runs(name)
        accs = [v["acc"] for v in r.values()]
        per_seed = ", ".join(f"{s}: {v['acc']:.2f}" for s, v in r.items())
        spread = f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else "-"
        g = " / ".join(f"{v['g']:.3f}" for v in r.values()) if name != "ungated" else "-"
        train = " / ".join(f"{100 * v['train']:.2f}" for v in r.values())
        if name == "ungated":
            lines.append(f"| {label} | {per_seed} | {spread} | - | - | - | {g} | {train} |")
            continue
        w = welch(accs, [v["acc"] for v in base.values()])
        ci = (
            f"{w['diff']:+.2f} [{w['ci_low']:+.2f}, {w['ci_high']:+.2f}]"
            if w["ci_low"] is not None
            else f"{w['diff']:+.2f}"
        )
        p = f"{w['p']:.2g}" if w["p"] is not None else "-"
        pairs = [r[s]["acc"] < base[s]["acc"] for s in r if s in base]
        lines.append(f"| {label} | {per_seed} | {spread} | {ci} | {p} | {sum(pairs)} of {len(pairs)} | {g} | {train} |")
    (HERE / "seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
