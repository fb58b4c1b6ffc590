"""Write a small CIFAR-10 subset as .npz for carrying to a GPU machine (the full archive is too big).

python -m benchmarks.make_subset [PATH] [--train 10000] [--out benchmarks/data/cifar10_subset.npz]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from memgate.data import load_dataset
from memgate.data.split import stratified_subset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", default=str(Path(os.environ.get("MEMGATE_DATA", ".")) / "cifar10.zip"))
    ap.add_argument("--train", type=int, default=10_000)
    ap.add_argument("--test", type=int, default=2_000)
    ap.add_argument("--out", default="benchmarks/data/cifar10_subset.npz")
    args = ap.parse_args()
    ds = load_dataset(args.path)
    tr = stratified_subset(np.arange(len(ds.y_train)), ds.y_train, args.train, seed=0)
    te = stratified_subset(np.arange(len(ds.y_test)), ds.y_test, args.test, seed=0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        x_train=ds.x_train[tr],
        y_train=ds.y_train[tr],
        x_test=ds.x_test[te],
        y_test=ds.y_test[te],
        classes=np.array(ds.classes),
    )
    print(f"{args.out}: {len(tr)} train + {len(te)} test images, {Path(args.out).stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
