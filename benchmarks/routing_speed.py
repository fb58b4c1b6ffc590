"""Wall-clock of real hard routing against the full network, at chosen shares of routed samples.

    python -m benchmarks.routing_speed [--depth 20] [--gates 3] [--batch-sizes 1 256] [--device cpu] [--no-amp]

A gate reading o1 decides per sample whether the stage's extra layers run. The routed share is set
exactly by taking tau at the batch's g quantile, so the speed depends on that share only, not on
training. For each share: measured speedup over the full network (every layer for every sample;
routed and full passes alternate, median of the per-round ratios) and the ideal speedup from MACs;
at batch 1 a sample either runs the layers or not; at larger batches the routed samples are
gathered into a smaller batch, and the gather has a cost.
"""

from __future__ import annotations

import argparse
import json

import torch

from memgate.analysis.timing import paired_speedup
from memgate.config import GateConfig, ModelConfig
from memgate.models import build_model, macs_per_stage
from memgate.train.precision import autocast, resolve_precision

SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--gates", type=int, nargs="+", default=[3])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-amp", action="store_true", help="fp32 even where the device has native bf16")
    a = p.parse_args()
    device = torch.device(a.device)
    precision = resolve_precision(device, not a.no_amp)[0]
    torch.manual_seed(0)
    gate = GateConfig(hidden=tuple(512 if s == 3 else 216 for s in a.gates), input="first_unit", g="normalized")
    net = build_model(ModelConfig(depth=a.depth, gates=tuple(a.gates)), gate).to(device).eval()
    net = net.to(memory_format=torch.channels_last)
    total, skip = macs_per_stage(net)
    rows = []
    for b in a.batch_sizes:
        n = 64 if b == 1 else 4 * b
        xs = list(torch.randn(n, 3, 32, 32, device=device).split(b))
        with torch.no_grad():
            g = torch.cat([net(x).gates[a.gates[-1]].g for x in xs])
        for share in SHARES:
            tau = 1.01 if share == 0 else float(torch.quantile(g, 1 - share)) if share < 1 else 0.0
            routed = float((g >= tau).float().mean())
            macs = total - sum(skip.values()) * (1 - routed)  # every gate uses the same tau on similar g
            timing = paired_speedup(net, xs, tau, a.repeats, autocast(device, precision))
            rows.append({"batch": b, "routed": routed, "ideal": total / macs, **timing})
    print(
        json.dumps(
            {"device": str(device), "precision": precision, "depth": a.depth, "gates": a.gates, "rows": rows}, indent=2
        )
    )


if __name__ == "__main__":
    main()
