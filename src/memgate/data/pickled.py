"""The official CIFAR "python version" (pickled batches), read without executing anything.

The batch files are pickles. ``pickle.loads`` would run whatever a crafted file asks for, so they go
through ``SafeUnpickler``: it admits only the numpy functions that rebuild plain arrays (dicts,
lists, bytes, str and ints need no class at all), then every batch's structure is checked.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import DataError
from .dataset import Dataset, checked
from .readers import Reader

# (module, name) pairs a numpy array's pickle refers to, under numpy 1.x and 2.x module names.
ALLOWED_GLOBALS = {
    (mod, name) for mod in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")
} | {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
PLAIN_DTYPES = {np.dtype(t) for t in ("u1", "i1", "i2", "u2", "i4", "u4", "i8", "u8")}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a function or class outside ``ALLOWED_GLOBALS``."""


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedGlobal(f"refused global {module}.{name}")
        return super().find_class(module, name)


def safe_loads(raw: bytes, what: str, path: Path) -> dict:
    """Unpickle one batch file with ``SafeUnpickler``; anything else is a one-line ``DataError``."""
    try:
        obj = SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except RefusedGlobal as e:
        raise DataError(f"data: {what} in {path} is not a plain CIFAR batch ({e}); refusing to load it") from None
    except Exception as e:  # noqa: BLE001 - any other unpickling failure means a damaged batch file
        raise DataError(f"data: cannot read {what} in {path} ({e.__class__.__name__}); re-download it") from None
    if not isinstance(obj, dict):
        raise DataError(f"data: {what} in {path} holds a {type(obj).__name__}, not a CIFAR batch dict; re-download it")
    return obj


def _labels(d: dict, key: bytes, n: int, what: str, path: Path) -> np.ndarray:
    y = d.get(key)
    if isinstance(y, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in y):
        y = np.asarray(y, dtype=np.int64)
    if not isinstance(y, np.ndarray) or y.dtype not in PLAIN_DTYPES or y.shape != (n,):
        raise DataError(f"data: {what} in {path} has no list of {n} integer labels under {key!r}; re-download it")
    return y.astype(np.int64)


def _batch(d: dict, label_key: bytes, what: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    x = d.get(b"data")
    if not isinstance(x, np.ndarray) or x.dtype not in PLAIN_DTYPES or x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"data: {what} in {path} has no (N, 3072) pixel array under b'data'; re-download it")
    if x.dtype != np.uint8 and (x.min(initial=0) < 0 or x.max(initial=0) > 255):
        raise DataError(f"data: {what} in {path} holds pixel values outside 0..255; re-download it")
    y = _labels(d, label_key, len(x), what, path)
    images = x.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), y


def _class_names(d: dict, key: bytes, what: str, path: Path) -> tuple[str, ...]:
    names = d.get(key)
    if not isinstance(names, list) or not names or not all(isinstance(c, (bytes, str)) for c in names):
        raise DataError(f"data: {what} in {path} has no list of class names under {key!r}; re-download it")
    try:
        return tuple(c.decode() if isinstance(c, bytes) else c for c in names)
    except UnicodeDecodeError:
        raise DataError(f"data: {what} in {path} holds class names that are not UTF-8; re-download it") from None


def from_python(reader: Reader, path: Path, fmt: str) -> Dataset:
    """CIFAR-10 (data_batch_1..5, test_batch, batches.meta) or CIFAR-100 (train, test, meta)."""
    names = reader.names()

    def find(base: str) -> str | None:
        hits = [n for n in names if PurePosixPath(n).name == base]
        return hits[0] if hits else None

    if find("data_batch_1"):  # CIFAR-10
        train_files = [find(f"data_batch_{i}") for i in range(1, 6)]
        test_file, meta_file, label_key, names_key = find("test_batch"), find("batches.meta"), b"labels", b"label_names"
        dname = "cifar10"
    else:  # CIFAR-100
        train_files = [find("train")]
        test_file, meta_file, label_key, names_key = find("test"), find("meta"), b"fine_labels", b"fine_label_names"
        dname = "cifar100"
    if any(f is None for f in [*train_files, test_file, meta_file]):
        raise DataError(f"data: {path} lacks some of the official batch files; re-download it")
    parts = [_batch(safe_loads(reader.read(f), f, path), label_key, f, path) for f in train_files]
    x_test, y_test = _batch(safe_loads(reader.read(test_file), test_file, path), label_key, test_file, path)
    classes = _class_names(safe_loads(reader.read(meta_file), meta_file, path), names_key, meta_file, path)
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return checked(Dataset(dname, classes, x_train, y_train, x_test, y_test, str(path), fmt, ""))
