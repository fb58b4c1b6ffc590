"""Data pipeline benchmark: decoded-cache load time and batched augmentation throughput.

    python -m benchmarks.data_pipeline [PATH] [--threads 1] [--json OUT]

PATH defaults to $MEMGATE_DATA/cifar10.zip. The first call builds the cache (not timed); then
the cache load of all 60k images and augmentation (crop + flip + normalise, batch 128) over one
epoch of the training set are timed, each repeated so the spread shows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from memgate.config import DataConfig
from memgate.data import load_dataset, make_split
from memgate.data.loader import DeviceData, epoch_plan
from memgate.data.stats import RELEASED_NORM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", default=str(Path(os.environ.get("MEMGATE_DATA", ".")) / "cifar10.zip"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    load_dataset(args.path, progress=True)  # build the cache once
    loads = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ds = load_dataset(args.path)
        loads.append(time.perf_counter() - t)
    n_images = len(ds.y_train) + len(ds.y_test)

    device = torch.device(args.device)
    data = DeviceData(ds, make_split(ds, DataConfig(val_size=0)), *RELEASED_NORM, device)
    rates = []
    for epoch in range(args.repeats):
        plan = epoch_plan(data.n_train, 0, epoch, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for a in range(0, data.n_train, 128):
            data.train_batch(plan, a, a + 128)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(data.n_train / (time.perf_counter() - t))

    result = {
        "images": n_images,
        "cache_load_s": {"median": statistics.median(loads), "min": min(loads), "max": max(loads)},
        "augment_images_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)},
        "threads": args.threads,
        "device": str(device),
    }
    print(
        f"cache load of {n_images:,d} images: median {result['cache_load_s']['median']:.3f} s "
        f"(min {min(loads):.3f}, max {max(loads):.3f})"
    )
    print(
        f"augmentation on {device} with {args.threads} thread(s): median "
        f"{result['augment_images_per_s']['median']:,.0f} images/s (min {min(rates):,.0f}, max {max(rates):,.0f})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
