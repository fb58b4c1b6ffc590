"""Training speed: memgate against a reference pipeline written from SPEC.md, in one process.

    python -m benchmarks.train_speed [--depth 20 110] [--device cpu|cuda] [--batches 20]
                                     [--repeats 3] [--json OUT] [--data PATH]

Measured, interleaved and repeated so that noise shows (median, min, max over repeats):
  reference   torch DataLoader over a Dataset doing per-image PIL pad/crop/flip + normalise
              (2 workers), fp32, NCHW, the same model and two-loss step, plus the released code's
              extra pass over the training set every epoch for the g histograms;
  baseline    memgate, ungated net: device-resident uint8 data, batched augmentation, channels_last,
              bf16 autocast on CUDA, no per-batch host sync;
  gated k=1   memgate, gate over B3, gate step and model step every batch, g recorded in the loop;
  gated k=5   memgate, model step every 5th batch;
  eval        memgate evaluation (no grad), images/s;
  data        batched augmentation alone, images/s.
Epoch time is extrapolated to a 50k-image epoch from the measured rates (plus, for the reference,
its extra pass). Training FLOP/s (3 x forward MACs x 2 per image) is reported as a fraction of
this machine's fp32 matmul peak, measured in the same run. Synthetic CIFAR-shaped data by default:
pixel content does not change speed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from memgate.config import DataConfig, load_config
from memgate.data import Dataset as CifarData
from memgate.data import load_dataset, make_split
from memgate.data.loader import DeviceData, epoch_plan
from memgate.data.stats import RELEASED_NORM
from memgate.models import build_model, count_macs
from memgate.train.evaluate import EVAL_BATCH
from memgate.train.recipe import make_optimizers, train_step

EPOCH_IMAGES = 50_000


# ----------------------------------------------------------------------------- reference pipeline


class ReferenceDataset(Dataset):
    """What the released code does per image: PIL pad 4 + random crop + flip, ToTensor, Normalize."""

    def __init__(self, x: np.ndarray, y: np.ndarray, augment: bool):
        self.x, self.y, self.augment = x, y, augment
        self.mean = np.array(RELEASED_NORM[0], np.float32)[:, None, None]
        self.std = np.array(RELEASED_NORM[1], np.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.x[i])
        if self.augment:
            img = ImageOps.expand(img, border=4, fill=0)
            dx, dy = np.random.randint(0, 9, 2)
            img = img.crop((dx, dy, dx + 32, dy + 32))
            if np.random.rand() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy((arr - self.mean) / self.std), int(self.y[i])


def reference_loader(ds: CifarData, augment: bool, batch: int = 128) -> DataLoader:
    return DataLoader(
        ReferenceDataset(ds.x_train, ds.y_train, augment),
        batch_size=batch,
        shuffle=augment,
        num_workers=2,
        persistent_workers=True,
        drop_last=False,
    )


# ----------------------------------------------------------------------------- timing helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_reference_train(model, opts, loader_iter, n_batches: int, device) -> float:
    model_opt, gate_opt = opts
    n = 0
    _sync(device)
    t = time.perf_counter()
    for _ in range(n_batches):
        x, y = next(loader_iter)
        x, y = x.to(device), y.to(device)
        train_step(model, x, y, model_opt, gate_opt, step_model=True)
        n += len(y)
    _sync(device)
    return n / (time.perf_counter() - t)


@torch.no_grad()
def time_reference_extra_pass(model, loader_iter, n_batches: int, device) -> float:
    model.eval()
    n = 0
    _sync(device)
    t = time.perf_counter()
    for _ in range(n_batches):
        x, y = next(loader_iter)
        out = model(x.to(device))
        [go.g.cpu() for go in out.gates.values()]  # the released code collects g on the host
        n += len(y)
    _sync(device)
    model.train()
    return n / (time.perf_counter() - t)


def time_memgate_train(model, opts, data: DeviceData, k: int, n_batches: int, device, autocast) -> float:
    model_opt, gate_opt = opts
    plan = epoch_plan(data.n_train, 0, int(time.time()) % 1000, device=device)
    g_buf = torch.zeros(data.n_train, device=device)
    n = 0
    _sync(device)
    t = time.perf_counter()
    for b in range(n_batches):
        batch = data.train_batch(plan, b * 128, (b + 1) * 128)
        x, y, pos = batch.x, batch.y, batch.pos
        r = train_step(model, x, y, model_opt, gate_opt, step_model=(b + 1) % k == 0, autocast=autocast)
        for g in r.g.values():
            g_buf[pos] = g
        n += len(y)
    _sync(device)
    return n / (time.perf_counter() - t)


@torch.no_grad()
def time_memgate_eval(model, data: DeviceData, n_batches: int, device, autocast) -> float:
    model.eval()
    n = 0
    _sync(device)
    t = time.perf_counter()
    for i, (x, y) in enumerate(data.eval_batches("test", EVAL_BATCH)):
        if i >= n_batches:
            break
        with autocast:
            model(x)
        n += len(y)
    _sync(device)
    model.train()
    return n / (time.perf_counter() - t)


def time_augment(data: DeviceData, n_batches: int, device) -> float:
    plan = epoch_plan(data.n_train, 1, 0, device=device)
    _sync(device)
    t = time.perf_counter()
    for b in range(n_batches):
        data.train_batch(plan, b * 128, (b + 1) * 128)
    _sync(device)
    return n_batches * 128 / (time.perf_counter() - t)


def matmul_peak_flops(device: torch.device, size: int = 2048, seconds: float = 2.0) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    _sync(device)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ b
        n += 1
    _sync(device)
    return n * 2 * size**3 / (time.perf_counter() - t)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- main


def synthetic(n_train: int, n_test: int) -> CifarData:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_train + n_test, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n_train + n_test)
    return CifarData(
        "cifar10",
        tuple(str(i) for i in range(10)),
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        "synthetic",
        "npz",
        "",
    )


def bench_depth(depth: int, ds: CifarData, device: torch.device, batches: int, repeats: int) -> dict:
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    data = DeviceData(ds, make_split(ds, DataConfig(val_size=0)), *RELEASED_NORM, device)

    def setup(gates: list[int], channels_last: bool):
        cfg = load_config(None, [f"model.depth={depth}", f"model.gates={gates}"])
        torch.manual_seed(0)
        m = build_model(cfg.model, cfg.gate).to(device)
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        return m, make_optimizers(m, cfg)

    ref_model, ref_opts = setup([3], channels_last=False)
    base_model, base_opts = setup([], channels_last=True)
    gated_model, gated_opts = setup([3], channels_last=True)
    macs, _ = count_macs(gated_model)
    ref_train_iter = iter(_forever(reference_loader(ds, augment=True)))
    ref_pass_iter = iter(_forever(reference_loader(ds, augment=False)))

    warm = max(2, batches // 5)
    time_reference_train(ref_model, ref_opts, ref_train_iter, warm, device)
    time_reference_extra_pass(ref_model, ref_pass_iter, warm, device)
    for m, o, k in ((base_model, base_opts, 1), (gated_model, gated_opts, 1)):
        time_memgate_train(m, o, data, k, warm, device, autocast)

    rates: dict[str, list[float]] = {
        k: [] for k in ("reference", "reference_extra_pass", "baseline", "gated_k1", "gated_k5", "eval", "augment")
    }
    for _ in range(repeats):
        rates["reference"].append(time_reference_train(ref_model, ref_opts, ref_train_iter, batches, device))
        rates["reference_extra_pass"].append(time_reference_extra_pass(ref_model, ref_pass_iter, batches, device))
        rates["baseline"].append(time_memgate_train(base_model, base_opts, data, 1, batches, device, autocast))
        rates["gated_k1"].append(time_memgate_train(gated_model, gated_opts, data, 1, batches, device, autocast))
        rates["gated_k5"].append(time_memgate_train(gated_model, gated_opts, data, 5, batches, device, autocast))
        rates["eval"].append(time_memgate_eval(gated_model, data, batches, device, autocast))
        rates["augment"].append(time_augment(data, batches * 4, device))
    med = {k: statistics.median(v) for k, v in rates.items()}
    epoch = {
        "reference": EPOCH_IMAGES / med["reference"] + EPOCH_IMAGES / med["reference_extra_pass"],
        "baseline": EPOCH_IMAGES / med["baseline"],
        "gated_k1": EPOCH_IMAGES / med["gated_k1"],
        "gated_k5": EPOCH_IMAGES / med["gated_k5"],
    }
    train_flops = med["gated_k1"] * 3 * 2 * macs
    return {
        "depth": depth,
        "images_per_s": {k: {"median": med[k], "min": min(v), "max": max(v)} for k, v in rates.items()},
        "epoch_time_s": epoch,
        "ratios": {
            "memgate_gated_vs_reference_epoch": epoch["reference"] / epoch["gated_k1"],
            "gated_k1_vs_baseline_time": epoch["gated_k1"] / epoch["baseline"],
            "gated_k5_vs_baseline_time": epoch["gated_k5"] / epoch["baseline"],
        },
        "macs_per_image": macs,
        "train_flops_per_s": train_flops,
    }


def _forever(loader):
    while True:
        yield from loader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, nargs="+", default=[20, 110])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", type=int, default=20, help="batches of 128 per timed segment")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default=None, help="a dataset path instead of synthetic images")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    ds = load_dataset(args.data) if args.data else synthetic(EPOCH_IMAGES, 10_000)
    peak = matmul_peak_flops(device)
    results = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "matmul_peak_flops": peak,
        "batch": 128,
        "batches_per_segment": args.batches,
        "repeats": args.repeats,
        "depths": [],
    }
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    where = results.get("gpu", f"{results['threads']} threads")
    print(f"device {device} ({where}), fp32 matmul peak {peak / 1e9:,.1f} GFLOP/s")
    for depth in args.depth:
        r = bench_depth(depth, ds, device, args.batches, args.repeats)
        r["flops_fraction_of_peak"] = r["train_flops_per_s"] / peak
        r["peak_memory_mb"] = peak_memory_mb(device)
        results["depths"].append(r)
        ips = r["images_per_s"]
        print(f"\nResNet-{depth} (images/s: median [min, max] over {args.repeats} repeats)")
        for k in ips:
            print(f"  {k:<22s} {ips[k]['median']:>10,.0f}  [{ips[k]['min']:,.0f}, {ips[k]['max']:,.0f}]")
        print("  epoch of 50k (s): " + ", ".join(f"{k} {v:,.1f}" for k, v in r["epoch_time_s"].items()))
        print("  ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items()))
        print(
            f"  training FLOP/s {r['train_flops_per_s'] / 1e9:,.1f} G = {100 * r['flops_fraction_of_peak']:.0f}% "
            f"of the matmul peak; peak memory {r['peak_memory_mb']:,.0f} MB"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
