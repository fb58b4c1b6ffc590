"""AUROC for the wrong labels through memorisation, from the committed files of results/memorise:
each run's detection.json (per-epoch AUROC) and metrics.jsonl (share of the wrong labels fitted),
and the seed pairs of the grid's comparisons from each run's summary.json and metrics.jsonl.
Writes phases.md and phases.png beside this file. From the repository root:
python results/memorise/phases.py"""

import json
from pathlib import Path

from memgate.analysis.figures import save, subplots

HERE = Path(__file__).resolve().parent
SCORES = ["g_b3", "loss", "neg_aum_to_epoch", "forgetting_to_epoch", "neg_confidence_to_epoch", "variability_to_epoch"]


def phases(fitted: list[float]) -> list[tuple[str, int]]:
    """(phase, 1-based epoch): epoch 10 (before), the first epoch with >= 50% and >= 90% of the
    wrong labels fitted (during; left out where the run never got there), the last epoch (after)."""
    during = [
        (f"{share:.0%} fitted", next((e for e, f in enumerate(fitted, 1) if f >= share), None)) for share in (0.5, 0.9)
    ]
    return [("epoch 10", 10), *((name, e) for name, e in during if e is not None), ("end", len(fitted))]


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
    lines += ["", *seed_pairs()]
    (HERE / "phases.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot()


# the grid's comparisons (experiments/memorise.toml's baselines): (reference, compared)
PAIRS = [
    ("baseline_sym20", "gated_sym20"),
    ("baseline_sym40", "gated_sym40"),
    ("baseline_asym20", "gated_asym20"),
    ("gated_sym40", "gated_sym40_constg"),
]


def seed_pairs() -> list[str]:
    """Per seed with both runs committed: final test accuracy of each, the difference, best validation
    accuracy (epoch) of each, and the compared run's last-epoch gate accuracy and mean g (training)."""
    lines = ["## Seed pairs (summary.json; gate accuracy and mean g of the last epoch of metrics.jsonl)", ""]
    lines += [
        "| reference | compared | seed | test acc ref | test acc cmp | cmp - ref | best val ref (epoch) "
        "| best val cmp (epoch) | gate acc cmp | mean g cmp |",
        "|---" * 10 + "|",
    ]
    for ref, cmp in PAIRS:
        for seed in range(3):
            a, b = (HERE / f"{ref}_seed{seed}", HERE / f"{cmp}_seed{seed}")
            if not ((a / "summary.json").exists() and (b / "summary.json").exists()):
                continue
            sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
            last = json.loads((b / "metrics.jsonl").read_text().splitlines()[-1])
            cells = [
                f"{100 * sa['final_test_acc']:.2f}",
                f"{100 * sb['final_test_acc']:.2f}",
                f"{100 * (sb['final_test_acc'] - sa['final_test_acc']):+.2f}",
                f"{100 * sa['best_val_acc']:.2f} ({sa['best_val_epoch']})",
                f"{100 * sb['best_val_acc']:.2f} ({sb['best_val_epoch']})",
                f"{100 * last['gate_acc']:.1f}%",
                f"{last['g_mean']:.3f}",
            ]
            lines.append(f"| {ref} | {cmp} | {seed} | " + " | ".join(cells) + " |")
    return lines


# per curve: (network, detection.json key, label, colour, line style)
CURVES = [
    ("gated", "g_b3", "g (gated)", "tab:blue", "-"),
    ("gated", "neg_aum_to_epoch", "-AUM so far (gated)", "tab:orange", "-"),
    ("baseline", "neg_aum_to_epoch", "-AUM so far (ungated)", "tab:orange", "--"),
    ("baseline", "neg_confidence_to_epoch", "-confidence so far (ungated)", "tab:green", "--"),
    ("baseline", "loss", "loss this epoch (ungated)", "tab:red", "--"),
]


def plot() -> None:
    """phases.png: per noise setting, per-epoch AUROC of g and of the plain network's scores (every
    seed a line), with the share of the wrong labels fitted (grey, right axis)."""
    runs = sorted(p for p in HERE.iterdir() if (p / "detection.json").exists())
    settings = sorted({p.name.split("_")[1] for p in runs})
    fig, axes = subplots(1, len(settings), figsize=(6 * len(settings), 4.5), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        fit_ax = ax.twinx()
        labelled = set()
        for run in (p for p in runs if p.name.split("_")[1] == setting):
            network = run.name.split("_")[0]
            curves = json.loads((run / "detection.json").read_text())["auroc_per_epoch"]
            fitted = [json.loads(x)["train_acc_noisy"] for x in (run / "metrics.jsonl").read_text().splitlines()]
            epochs = range(1, len(fitted) + 1)
            fit_ax.plot(epochs, [100 * f for f in fitted], color="grey", lw=0.8, ls="-" if network == "gated" else "--")
            for net, key, label, colour, style in CURVES:
                if net == network and key in curves:
                    ax.plot(
                        epochs,
                        curves[key],
                        color=colour,
                        ls=style,
                        lw=1.2,
                        label=label if label not in labelled else "_nolegend_",
                    )
                    labelled.add(label)
        ax.axhline(0.5, color="k", lw=0.5, ls=":")
        ax.set(xlabel="epoch", ylabel="AUROC for the wrong labels", ylim=(0.0, 1.0), title=setting)
        fit_ax.set(ylabel="wrong labels fitted (%, grey; dashed: ungated)", ylim=(0, 100))
        ax.legend(fontsize=7, loc="lower left")
    save(fig, HERE / "phases.png", "Detection of the wrong labels through memorisation (every committed seed)", 10)


if __name__ == "__main__":
    main()
