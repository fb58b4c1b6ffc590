"""`memgate demo`: a short real run that shows the gate at work on a CPU (minutes on 2 cores).

A gated ResNet-20 trains on a stratified 2,000-image CIFAR-10 subset, 20% of it with wrong
labels, without augmentation so that the network memorises within 30 epochs. Each epoch prints
accuracy and g statistics; at the end the demo compares g on the noisy-label samples with g on the
clean ones and writes Figure 2 (g over epochs) and the images with the highest g.
"""

from __future__ import annotations

from pathlib import Path

from .analysis.analyze import analyze_run
from .analysis.gates import noisy_vs_clean
from .config import load_config
from .data import find_data
from .train.run import train
from .train.rundir import read_gates, read_metrics

DEMO_OVERRIDES = (
    "model.depth=20",
    "model.gates=[3]",
    "data.dataset=cifar10",
    "data.val_size=2000",
    "data.train_subset=2000",
    "data.label_noise=0.2",
    "data.augment=false",
    "train.epochs=30",
    "train.eval_every=5",
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
    nv = noisy_vs_clean(read_gates(run))
    print("\nepoch  test acc  gate acc  mean g  g>0.5   mean g noisy / clean labels  wrong labels fitted")
    for i, r in enumerate(read_metrics(run)):
        noisy = f"{nv['noisy_g_mean'][i]:.3f} / {nv['clean_g_mean'][i]:.3f}" if nv["noisy_g_mean"] else "-"
        test = f"{100 * r['test_acc']:7.2f}%" if r["test_acc"] is not None else "      -"
        fitted = f"{100 * r['train_acc_noisy']:6.1f}%" if r.get("train_acc_noisy") is not None else "-"
        print(
            f"{r['epoch']:>5d}  {test}  {100 * r['gate_acc']:7.2f}%  "
            f"{r['g_mean']:.3f}  {100 * r['frac_g_above_half']:5.1f}%   {noisy:<27s}  {fitted}"
        )
    print(
        f"\nfinal test accuracy {100 * summary['final_test_acc']:.2f}% "
        f"after {summary['train_time_s']:.0f} s of training"
    )
    print(analyze_run(run))
    return summary
