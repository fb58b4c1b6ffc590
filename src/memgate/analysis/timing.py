"""Measured speed of a network's passes on a machine that others may share: paired, alternating
timings of hard routing against the full network, and of reference networks against it, for
`memgate tradeoff` and benchmarks/routing_speed."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch

from ..train.evaluate import SavedRun, open_run

MIN_TIMED_S = 0.5  # seconds each timed measurement spans at least (see paired_rates)


def paired_rates(
    a: Callable[[], None], b: Callable[[], None], n: int, repeats: int, cuda: bool, min_s: float = MIN_TIMED_S
) -> dict:
    """Images/s of ``a`` and of ``b`` (each one pass over the same ``n`` images) and ``b``'s time over
    ``a``'s: they alternate, the ratio is the median of the per-round ratios (a slow phase hits both),
    and each side repeats its pass to span ``min_s`` seconds (0.3 s passes varied 2x on an idle CPU)."""

    def once(f: Callable[[], None], k: int = 1) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(k):
                f()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    warm = min(once(a), once(b))
    k = max(1, math.ceil(min_s / max(warm, 1e-9)))
    rounds = [(once(a, k) / k, once(b, k) / k) for _ in range(repeats)]
    return {
        "images_per_s": n / float(np.median([x for x, _ in rounds])),
        "images_per_s_range": [n / max(x for x, _ in rounds), n / min(x for x, _ in rounds)],  # slowest, fastest
        "full_images_per_s": n / float(np.median([y for _, y in rounds])),
        "speedup": float(np.median([y / x for x, y in rounds])),
    }


def passes(
    net: torch.nn.Module, batches: list[torch.Tensor], autocast: AbstractContextManager, mode: str, tau: float = 0.5
) -> Callable[[], None]:
    """One timed pass of ``net`` over ``batches`` in g-mode ``mode`` (an ungated network ignores it)."""

    def run() -> None:
        with autocast:
            for x in batches:
                net(x, g_mode=mode, tau=tau)

    return run


def paired_speedup(
    net: torch.nn.Module, batches: list[torch.Tensor], tau: float, repeats: int, autocast: AbstractContextManager
) -> dict:
    """Images/s of real hard routing at ``tau`` and its speedup over the full network (every extra
    layer for every sample), the two passes alternating (`paired_rates`)."""
    routed, full = passes(net, batches, autocast, "hard", tau), passes(net, batches, autocast, "full")
    return paired_rates(routed, full, sum(len(x) for x in batches), repeats, batches[0].device.type == "cuda")


def timings(r: SavedRun, timed: dict[int, list[torch.Tensor]], tau: float, repeats: int) -> dict:
    """The measured part of a point: at each batch size, images/s of hard routing at ``tau``, its
    speedup over the full network and the paired full passes' images/s."""
    t = {b: paired_speedup(r.net, batches, tau, repeats, r.autocast()) for b, batches in timed.items()}
    return {
        **{f"images_per_s_b{b}": v["images_per_s"] for b, v in t.items()},
        "images_per_s_range": {b: v["images_per_s_range"] for b, v in t.items()},
        "speedup": {b: v["speedup"] for b, v in t.items()},
        "full_images_per_s": {b: v["full_images_per_s"] for b, v in t.items()},
    }


def time_reference(ref: dict, r: SavedRun, x: np.ndarray, batch_sizes: tuple[int, ...], repeats: int) -> None:
    """Puts a reference network on the time axes: its images/s at each batch size, alternated with the
    gated run's full network over the same images, and its speedup over that full network (so a
    static ResNet-20 and the hard gate are timed against the same thing), in the gated run's
    precision: an imported fp32 network timed in fp32 beside a bf16 one would measure the precision,
    not the architecture. Adds ``images_per_s`` and ``speedup`` ({batch size: value}) to ``ref``."""
    other = open_run(ref["run"], device=r.device.type)  # the gated run's device
    ref["images_per_s"], ref["speedup"] = {}, {}
    for b in batch_sizes:
        batches = timing_batches(other, x, b)
        mine = passes(other.net, batches, r.autocast(), "full")
        full = passes(r.net, timing_batches(r, x, b), r.autocast(), "full")
        t = paired_rates(mine, full, sum(len(v) for v in batches), repeats, r.device.type == "cuda")
        ref["images_per_s"][b], ref["speedup"][b] = t["images_per_s"], t["speedup"]


def timing_batches(r: SavedRun, x: np.ndarray, batch: int) -> list[torch.Tensor]:
    """The timed images (128 at batch 1, four batches otherwise), normalised on the run's device."""
    from ..data.loader import normalize

    n = min(len(x), 128 if batch == 1 else 4 * batch)
    xs = normalize(torch.from_numpy(np.ascontiguousarray(x[:n])).to(r.device), r.data.mean, r.data.std)
    return list(xs.split(batch))
