"""What recording the per-sample signals costs per training step (gated ResNet-20 by default).

    python -m benchmarks.signals_cost [--depth 20] [--batch 128] [--steps 20] [--rounds 5] [--device cpu]

The same batches are trained with and without ``SampleSignals.record`` (the loss, margin,
correctness, gate loss and entropy scattered into the epoch buffers, plus the softmax on the two
epochs that keep it), interleaved round by round: the median ratio of step times. Because a busy
machine makes that ratio noisy, the recording is also timed alone on stored step outputs and
reported as a share of the plain step time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from memgate.config import load_config
from memgate.models import build_model
from memgate.train.recipe import make_optimizers, train_step
from memgate.train.signals import SampleSignals, signal_names


def _time_steps(model, opts, batches, samples: SampleSignals | None, device) -> float:
    t0 = time.perf_counter()
    for pos, x, y in batches:
        r = train_step(model, x, y, *opts)
        if samples is not None:
            samples.record(pos, r.logits, r.gate_logits, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--probs", action="store_true", help="time an epoch that also keeps the softmax")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    cfg = load_config(None, [f"model.depth={a.depth}", "model.gates=[3]"])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.gate).to(device, memory_format=torch.channels_last)
    opts = make_optimizers(model, cfg)
    n = a.steps * a.batch
    batches = [
        (
            torch.arange(i * a.batch, (i + 1) * a.batch, device=device),
            torch.randn(a.batch, 3, 32, 32, device=device),
            torch.randint(0, 10, (a.batch,), device=device),
        )
        for i in range(a.steps)
    ]
    samples = SampleSignals(signal_names([3]), n, 1, {"probs_final": 0} if a.probs else {}, device)
    samples.start_epoch(0, 10)
    _time_steps(model, opts, batches[:3], samples, device)  # warm-up
    ratios, plain, rec = [], [], []
    for _ in range(a.rounds):
        t_plain = _time_steps(model, opts, batches, None, device)
        t_rec = _time_steps(model, opts, batches, samples, device)
        plain.append(t_plain)
        rec.append(t_rec)
        ratios.append(t_rec / t_plain)
    # The recording alone, on stored step outputs, many times: a precise cost beside a noisy step time.
    outs = [(pos, train_step(model, x, y, *opts), y) for pos, x, y in batches[:5]]
    t0 = time.perf_counter()
    for _ in range(20):
        for pos, r, y in outs:
            samples.record(pos, r.logits, r.gate_logits, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    record_ms = 1000 * (time.perf_counter() - t0) / (20 * len(outs))
    res = {
        "device": str(device),
        "depth": a.depth,
        "batch": a.batch,
        "steps": a.steps,
        "keeps_softmax": a.probs,
        "step_ms_plain": 1000 * statistics.median(plain) / a.steps,
        "step_ms_recording": 1000 * statistics.median(rec) / a.steps,
        "record_ms_alone": record_ms,
        "record_share_of_plain_step": record_ms / (1000 * statistics.median(plain) / a.steps),
        "overhead_median": statistics.median(ratios) - 1,
        "overhead_min": min(ratios) - 1,
        "overhead_max": max(ratios) - 1,
    }
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
