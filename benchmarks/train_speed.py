"""Training speed: memgate against a reference pipeline written from SPEC.md, in one process.

    python -m benchmarks.train_speed [--depth 20 110] [--device cpu|cuda] [--batches 20]
                                     [--repeats 3] [--json OUT] [--data PATH] [--no-amp]

Measured, interleaved and repeated so that noise shows (median, min, max over repeats):
  reference   torch DataLoader over a Dataset doing per-image PIL pad/crop/flip + normalise
              (2 workers), fp32, NCHW, the same model and two-loss step, plus the released code's
              extra pass over the training set every epoch for the g histograms;
  baseline    memgate, ungated net: device-resident uint8 data, batched augmentation, channels_last,
              no per-batch host sync;
  gated k=1   memgate, gate over B3, gate step and model step every batch, g recorded in the loop;
  gated k=5   memgate, model step every 5th batch;
  eval        memgate evaluation (no grad), images/s;
  data        batched augmentation alone, images/s.
memgate's rows are measured in fp32 and, where the device has native bf16 (CUDA, or a CPU with
avx512_bf16/amx_bf16; memgate.train.precision), in bf16 autocast too (suffix _bf16).
Epoch time is extrapolated to a 50k-image epoch from the measured rates (plus, for the reference,
its extra pass). Training FLOP/s (3 x forward MACs x 2 per image) is reported as a fraction of
this machine's matmul peak in the precision that ran, both measured in the same run.
Epoch-end write: the files a gated run writes when an epoch ends (history rows, checkpoint,
metrics.jsonl, signals.npz, gates.npz), for a 45k-image run of 300 epochs at epoch 1 and epoch
300, against rewriting the whole history every epoch (what memgate did before history/).
Synthetic CIFAR-shaped data by default: pixel content does not change speed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
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
from memgate.train import checkpoint as ckpt_io
from memgate.train import rundir
from memgate.train.evaluate import EVAL_BATCH
from memgate.train.history import History
from memgate.train.precision import autocast, resolve_precision
from memgate.train.recipe import make_optimizers, train_step
from memgate.train.signals import signal_names
from memgate.train.state import RunState

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


def matmul_peak_flops(device: torch.device, dtype=torch.float32, size: int = 2048, seconds: float = 2.0) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
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


def bench_depth(depth: int, ds: CifarData, device: torch.device, batches: int, repeats: int, precisions) -> dict:
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
    casts = {p: autocast(device, p) for p in precisions}
    suffix = {"fp32": "", "bf16": "_bf16"}

    warm = max(2, batches // 5)
    time_reference_train(ref_model, ref_opts, ref_train_iter, warm, device)
    time_reference_extra_pass(ref_model, ref_pass_iter, warm, device)
    for cast in casts.values():
        for m, o in ((base_model, base_opts), (gated_model, gated_opts)):
            time_memgate_train(m, o, data, 1, warm, device, cast)

    rates: dict[str, list[float]] = {k: [] for k in ("reference", "reference_extra_pass", "augment")}
    for _ in range(repeats):  # interleaved: a slow phase of the machine hits every row alike
        rates["reference"].append(time_reference_train(ref_model, ref_opts, ref_train_iter, batches, device))
        rates["reference_extra_pass"].append(time_reference_extra_pass(ref_model, ref_pass_iter, batches, device))
        for p, cast in casts.items():
            sx = suffix[p]
            for name, m, o, k in (("baseline", base_model, base_opts, 1), ("gated_k1", gated_model, gated_opts, 1)):
                rates.setdefault(name + sx, []).append(time_memgate_train(m, o, data, k, batches, device, cast))
            rates.setdefault("gated_k5" + sx, []).append(
                time_memgate_train(gated_model, gated_opts, data, 5, batches, device, cast)
            )
            rates.setdefault("eval" + sx, []).append(time_memgate_eval(gated_model, data, batches, device, cast))
        rates["augment"].append(time_augment(data, batches * 4, device))
    med = {k: statistics.median(v) for k, v in rates.items()}
    epoch = {"reference": EPOCH_IMAGES / med["reference"] + EPOCH_IMAGES / med["reference_extra_pass"]}
    ratios = {}
    for p in precisions:
        sx = suffix[p]
        for k in ("baseline", "gated_k1", "gated_k5"):
            epoch[k + sx] = EPOCH_IMAGES / med[k + sx]
        ratios[f"memgate_gated{sx}_vs_reference_epoch"] = epoch["reference"] / epoch["gated_k1" + sx]
        ratios[f"gated_k1{sx}_vs_baseline{sx}_time"] = epoch["gated_k1" + sx] / epoch["baseline" + sx]
    if "bf16" in precisions:
        ratios["eval_bf16_vs_fp32"] = med["eval_bf16"] / med["eval"]
        ratios["gated_k1_bf16_vs_fp32_epoch"] = epoch["gated_k1"] / epoch["gated_k1_bf16"]
    return {
        "depth": depth,
        "images_per_s": {k: {"median": med[k], "min": min(v), "max": max(v)} for k, v in rates.items()},
        "epoch_time_s": epoch,
        "ratios": ratios,
        "macs_per_image": macs,
        "train_flops_per_s": {p: med["gated_k1" + suffix[p]] * 3 * 2 * macs for p in precisions},
        "gated_model": gated_model,  # for the epoch-end write, dropped before the JSON
        "gated_opts": gated_opts,
    }


def time_epoch_end(model, opts, n: int = 45_000, epochs: int = 300, repeats: int = 3) -> dict:
    """Seconds for one gated run's epoch-end writes at epoch 1 and at epoch ``epochs`` (what
    ``Trainer._end_epoch`` writes: history rows, checkpoint, metrics.jsonl, signals.npz, gates.npz),
    and for rewriting the whole history as one npz at that epoch (memgate before history/)."""
    names = signal_names([3])
    row = {k: np.random.default_rng(0).random(n).astype(np.float16) for k in [*names, "g_b3"]}
    cfg = load_config(None, ["model.gates=[3]", "model.depth=110", f"train.epochs={epochs}"])
    state = RunState(epoch=1, metrics=[{"epoch": 1, "train_loss": 1.0, "test_acc": 0.5}])
    state.samples = {"epoch": {k: torch.zeros(n) for k in names}, "probs_epoch": None, "probs": {}}
    split = {"indices": np.arange(n), "labels": np.zeros(n, np.int64), "noisy": np.zeros(n, bool)}
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        history = History(run / rundir.HISTORY, [*names, "g_b3"], epochs, n)
        history.open(0)
        for e in (1, epochs):
            state.epoch, state.metrics = e, state.metrics[:1] * e
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                history.write(e - 1, row)
                ckpt_io.save(ckpt_io.build(cfg, model, *opts, state), run / rundir.CHECKPOINT)
                rundir.write_metrics(run, state.metrics)
                rundir.write_signals(run, {**split, **rundir.history_reference(names, e)})
                rundir.write_gates(run, {**split, **rundir.history_reference(["g_b3"], e)})
                times.append(time.perf_counter() - t)
            out[f"epoch_{e}"] = statistics.median(times)
        whole = {k: np.zeros((epochs, n), np.float16) for k in row}
        t = time.perf_counter()
        rundir.write_signals(run, {**split, **whole})
        out[f"rewrite_whole_history_epoch_{epochs}"] = time.perf_counter() - t
    out["epoch_300_vs_1"] = out[f"epoch_{epochs}"] / out["epoch_1"]
    return out


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
    ap.add_argument("--no-amp", action="store_true", help="fp32 rows only")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    precisions = ["fp32"]
    if resolve_precision(device, not args.no_amp)[0] == "bf16":
        precisions.append("bf16")
    ds = load_dataset(args.data) if args.data else synthetic(EPOCH_IMAGES, 10_000)
    peak = {"fp32": matmul_peak_flops(device)}
    if "bf16" in precisions:
        peak["bf16"] = matmul_peak_flops(device, torch.bfloat16)
    results = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "matmul_peak_flops": peak,
        "batch": 128,
        "batches_per_segment": args.batches,
        "repeats": args.repeats,
        "precisions": precisions,
        "depths": [],
    }
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    where = results.get("gpu", f"{results['threads']} threads")
    print(
        f"device {device} ({where}), matmul peak "
        + ", ".join(f"{p} {v / 1e9:,.1f}" for p, v in peak.items())
        + " GFLOP/s"
    )
    for depth in args.depth:
        r = bench_depth(depth, ds, device, args.batches, args.repeats, precisions)
        model, opts = r.pop("gated_model"), r.pop("gated_opts")
        r["flops_fraction_of_peak"] = {p: f / peak[p] for p, f in r["train_flops_per_s"].items()}
        r["peak_memory_mb"] = peak_memory_mb(device)
        r["epoch_end_write_s"] = time_epoch_end(model, opts)
        results["depths"].append(r)
        ips = r["images_per_s"]
        print(f"\nResNet-{depth} (images/s: median [min, max] over {args.repeats} repeats)")
        for k in ips:
            print(f"  {k:<22s} {ips[k]['median']:>10,.0f}  [{ips[k]['min']:,.0f}, {ips[k]['max']:,.0f}]")
        print("  epoch of 50k (s): " + ", ".join(f"{k} {v:,.1f}" for k, v in r["epoch_time_s"].items()))
        print("  ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items()))
        for p, f in r["train_flops_per_s"].items():
            print(
                f"  training FLOP/s {p} {f / 1e9:,.1f} G = {100 * r['flops_fraction_of_peak'][p]:.0f}% of the {p} peak"
            )
        print("  epoch-end write (s): " + ", ".join(f"{k} {v:.3f}" for k, v in r["epoch_end_write_s"].items()))
        print(f"  peak memory {r['peak_memory_mb']:,.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
