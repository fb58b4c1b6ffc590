"""Small synthetic CIFAR-like datasets written to disk in every supported format."""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_arrays(per_class_train=3, per_class_test=2, classes=10, seed=0):
    """Class-sorted arrays (the order an image-folder tree gives back)."""
    rng = np.random.default_rng(seed)
    y_train = np.repeat(np.arange(classes), per_class_train)
    y_test = np.repeat(np.arange(classes), per_class_test)
    x_train = rng.integers(0, 256, (len(y_train), 32, 32, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (len(y_test), 32, 32, 3), dtype=np.uint8)
    return x_train, y_train, x_test, y_test


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def image_tree_files(x_train, y_train, x_test, y_test, names=CLASSES, prefix="cifar10/"):
    files = {f"{prefix}classes.txt": ("\n".join(names) + "\n").encode()}
    for split, xs, ys in (("train", x_train, y_train), ("test", x_test, y_test)):
        for i, (img, lab) in enumerate(zip(xs, ys)):
            files[f"{prefix}{split}/{names[lab]}/{i:05d}.png"] = png(img)
    return files


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def python_version_files(x_train, y_train, x_test, y_test, names=CLASSES):
    """The official CIFAR-10 python layout: five pickled training batches, a test batch, meta."""

    def batch(x, y):
        data = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
        return pickle.dumps({b"data": data, b"labels": [int(v) for v in y], b"batch_label": b"x"})

    chunks = np.array_split(np.arange(len(y_train)), 5)
    files = {f"cifar-10-batches-py/data_batch_{i + 1}": batch(x_train[c], y_train[c]) for i, c in enumerate(chunks)}
    files["cifar-10-batches-py/test_batch"] = batch(x_test, y_test)
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": [n.encode() for n in names]})
    return files


def write_learnable_npz(path: Path, n_train=512, n_test=128, classes=10, seed=0) -> Path:
    """Images whose class shows as a colour cast plus noise: a tiny net learns it in one epoch."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, (classes, 3))

    def make(n):
        y = rng.integers(0, classes, n)
        x = colours[y][:, None, None, :] + rng.normal(0, 30, (n, 32, 32, 3))
        return np.clip(x, 0, 255).astype(np.uint8), y

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path
