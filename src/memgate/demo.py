"""`memgate demo`: a short real run that shows the gate at work on a CPU (minutes on 2 cores).

A gated ResNet-20 trains on a stratified 2,000-image CIFAR-10 subset, 20% of it with wrong
labels, without augmentation so that the network starts to memorise within 18 epochs (LR 0.1, then
0.01 from epoch 13). Each epoch prints accuracy and g statistics; at the end the demo compares g on
the noisy-label samples with g on the clean ones, writes Figure 2 (g over epochs) and the images
with the highest g, and ``demo.json``: the table it printed, with the machine and thread count
that produced it (the thread count changes the whole trajectory, not only the last digits).

It stops before a second LR drop on purpose: at LR 0.001 the network learns ten times slower than
the gate head (constant 0.01), whose g keeps falling, so the blend keeps moving towards o1 and the
network loses part of what it had memorised; that phase says more about the two learning rates
than about memorisation.
"""

from __future__ import annotations

from pathlib import Path

from .analysis.analyze import analyze_run
from .analysis.gates import noisy_vs_clean
from .atomic import write_json
from .config import load_config
from .data import find_data
from .train.run import train
from .train.rundir import read_gates, read_metrics

DEMO_JSON = "demo.json"
DEMO_OVERRIDES = (
    "model.depth=20",
    "model.gates=[3]",
    "data.dataset=cifar10",
    "data.val_size=2000",
    "data.train_subset=2000",
    "data.label_noise=0.2",
    "data.augment=false",
    "train.epochs=18",
    "train.milestones=[12]",
    "train.eval_every=3",
)


def run_demo(overrides: list[str] | tuple[str, ...] = (), out: str = "runs/demo", force: bool = False) -> dict:
    cfg = load_config(None, [*DEMO_OVERRIDES, f"out={out}", *overrides])
    # Find (or download) the data first, so that a missing dataset fails before anything else.
    cfg = load_config(None, [*DEMO_OVERRIDES, f"out={out}", *overrides, f"data.path={find_data(cfg.data)}"])
    print(
        f"memgate demo: gated ResNet-20 on {cfg.data.train_subset:,d} CIFAR-10 images with "
        f"{100 * cfg.data.label_noise:.0f}% noisy labels, {cfg.train.epochs} epochs -> {out}"
    )
    summary = train(cfg, force=force)
    run = Path(cfg.out)
    rows = demo_rows(run)
    print("\nepoch  test acc  gate acc  mean g  g>0.5   mean g noisy / clean labels  wrong labels fitted")
    for r in rows:
        test = f"{100 * r['test_acc']:7.2f}%" if r["test_acc"] is not None else "      -"
        print(
            f"{r['epoch']:>5d}  {test}  {100 * r['gate_acc']:7.2f}%  {r['g_mean']:.3f}  "
            f"{100 * r['frac_g_above_half']:5.1f}%   {r['g_noisy']:.3f} / {r['g_clean']:.3f}"
            f"{'':14s}  {100 * r['wrong_labels_fitted']:6.1f}%"
        )
    write_json(run / DEMO_JSON, {"machine": machine(), "precision": summary["precision"], "epochs": rows})
    print(
        f"\nfinal test accuracy {100 * summary['final_test_acc']:.2f}% "
        f"after {summary['train_time_s']:.0f} s of training; the table is in {run / DEMO_JSON}"
    )
    print(analyze_run(run))
    print(
        "The demo stops after one LR drop: after a second one (LR 0.001) the gate head, still at 0.01, "
        "keeps lowering g, the blend moves towards o1 and the network unlearns part of what it memorised."
    )
    return summary


def demo_rows(run: Path) -> list[dict]:
    """Per epoch: test and gate accuracy, mean g and its share above 0.5, mean g of the noisy-label and
    of the clean samples, and the share of the wrong labels fitted."""
    nv = noisy_vs_clean(read_gates(run))
    return [
        {
            "epoch": r["epoch"],
            "test_acc": r["test_acc"],
            "gate_acc": r["gate_acc"],
            "g_mean": r["g_mean"],
            "frac_g_above_half": r["frac_g_above_half"],
            "g_noisy": float(nv["noisy_g_mean"][i]),
            "g_clean": float(nv["clean_g_mean"][i]),
            "wrong_labels_fitted": r["train_acc_noisy"],
        }
        for i, r in enumerate(read_metrics(run))
    ]


def machine() -> dict:
    """What produced the figures: the CPU model, the thread count, torch's version."""
    import platform

    import torch

    model = next(
        (ln.split(":", 1)[1].strip() for ln in _cpuinfo().splitlines() if ln.startswith("model name")),
        platform.machine(),
    )
    return {"cpu": model, "threads": torch.get_num_threads(), "torch": torch.__version__.split("+")[0]}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""
