"""Where a training step's time goes, by ablation: memgate's gated training step as it is, and with
every BatchNorm and/or every ReLU replaced by the identity, per precision.

    python -m benchmarks.step_breakdown [--depth 20 110] [--steps 5] [--repeats 5] [--json OUT]

A step is `memgate.train.recipe.train_step` on the gated network (gate over B3, channels_last,
batch 128, random CIFAR-shaped input), as `benchmarks/train_speed.py` times it. What a removed
layer saves (forward and backward) is its cost; what is left with both removed is the convolutions,
the residual adds, the heads and the optimizer. bf16 speeds up the convolutions' matmuls; the
BatchNorm and ReLU passes are memory-bound. ``bound_if_free``: the step's speed-up if BatchNorm and
ReLU took no time at all, an upper bound on what fusing them could give. (The PyTorch profiler is
no help here: on this CPU it inflated the large memory-bound operators several-fold.) Without its
BatchNorm the network's activations grow unchecked; the timing does not depend on their values.
The variants alternate, and each figure is the median over ``repeats`` rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import ExitStack
from unittest import mock

import torch
from torch import nn

from memgate.config import load_config
from memgate.models import build_model
from memgate.train.precision import autocast, resolve_precision
from memgate.train.recipe import make_optimizers, train_step

VARIANTS = {"as_is": (), "no_bn": ("bn",), "no_relu": ("relu",), "no_bn_no_relu": ("bn", "relu")}


def _network(depth: int, without: tuple[str, ...]) -> nn.Module:
    cfg = load_config(None, [f"model.depth={depth}", "model.gates=[3]"])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.gate)
    if "bn" in without:
        for m in list(model.modules()):
            for child, sub in list(m.named_children()):
                if isinstance(sub, nn.BatchNorm2d):
                    setattr(m, child, nn.Identity())
    return model.to(memory_format=torch.channels_last).train(), make_optimizers(model, cfg)


def _step_seconds(model, opts, without: tuple[str, ...], cast, steps: int) -> float:
    x = torch.randn(128, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    with ExitStack() as stack:
        if "relu" in without:  # the model calls torch.nn.functional.relu at run time
            stack.enter_context(mock.patch("torch.nn.functional.relu", lambda t, inplace=False: t))
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(model, x, y, *opts, autocast=cast)
        return (time.perf_counter() - t0) / steps


def breakdown(depth: int, precision: str, steps: int, repeats: int) -> dict:
    """Median seconds per training step of each variant, the costs they imply and the bound."""
    cast = autocast(torch.device("cpu"), precision)
    nets = {v: _network(depth, w) for v, w in VARIANTS.items()}
    for v, (m, o) in nets.items():  # warm-up
        _step_seconds(m, o, VARIANTS[v], cast, 2)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for v, (m, o) in nets.items():
            times[v].append(_step_seconds(m, o, VARIANTS[v], cast, steps))
    t = {v: statistics.median(x) for v, x in times.items()}
    full = t["as_is"]
    return {
        "step_s": t,
        "share": {
            "batch_norm": (full - t["no_bn"]) / full,
            "relu": (full - t["no_relu"]) / full,
            "batch_norm_and_relu": (full - t["no_bn_no_relu"]) / full,
        },
        "bound_if_free": full / t["no_bn_no_relu"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, nargs="+", default=[20, 110])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    precisions = ["fp32"] + (["bf16"] if resolve_precision(torch.device("cpu"), True)[0] == "bf16" else [])
    results = {"threads": torch.get_num_threads(), "batch": 128, "steps": args.steps, "repeats": args.repeats}
    results["depths"] = {}
    for depth in args.depth:
        results["depths"][depth] = {p: breakdown(depth, p, args.steps, args.repeats) for p in precisions}
        for p, r in results["depths"][depth].items():
            s = r["share"]
            print(
                f"ResNet-{depth} {p}: {1e3 * r['step_s']['as_is']:.0f} ms per step; "
                f"BatchNorm {100 * s['batch_norm']:.0f}%, "
                f"ReLU {100 * s['relu']:.0f}%, both {100 * s['batch_norm_and_relu']:.0f}% "
                f"(a step without them: {r['bound_if_free']:.2f}x faster)"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
