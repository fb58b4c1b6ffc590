"""Decoders for every supported source format, detected from the path.

* the official "python version": ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` or
  their extracted folders ``cifar-10-batches-py/`` / ``cifar-100-python/``;
* image-folder trees ``train/<class>/*`` + ``test/<class>/*`` (any image Pillow reads, optional
  ``classes.txt``), as a folder or inside a zip / tar archive;
* ``.npz`` with ``x_train, y_train, x_test, y_test`` (uint8, NHWC or NCHW).
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DataError
from .dataset import IMAGE_SHAPE, Dataset, checked

ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")


def decode_source(path: Path, progress: bool = False) -> Dataset:
    name = path.name.lower()
    if path.is_dir():
        if (path / "data_batch_1").exists() or (path / "train").is_file():
            return _from_python(_DirReader(path), path, "python-folder")
        for sub in ("cifar-10-batches-py", "cifar-100-python"):
            if (path / sub).is_dir():
                return _from_python(_DirReader(path / sub), path, "python-folder")
        return _from_images(_DirReader(path), path, "image-folder", progress)
    if name.endswith(".npz"):
        return _from_npz(path)
    if name.endswith(".zip"):
        reader: _Reader = _ZipReader(path)
        fmt = "image-zip"
    elif name.endswith((".tar", ".tar.gz", ".tgz")):
        reader = _TarReader(path)
        fmt = "image-tar"
    else:
        raise DataError(f"data: unknown format for {path}; expected .tar.gz/.tgz/.tar/.zip, .npz, or a folder")
    names = reader.names()
    if not names:
        raise DataError(f"data: {path} is empty (expected CIFAR python batches or train/<class>/* images)")
    # Only the python version has a *file* named data_batch_1 (CIFAR-10) or train (CIFAR-100).
    if any(PurePosixPath(n).name in ("data_batch_1", "train") for n in names):
        return _from_python(reader, path, "python-archive")
    return _from_images(reader, path, fmt, progress)


class _Reader:
    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def read_many(self, names: list[str]) -> list[bytes]:
        return [self.read(n) for n in names]


class _DirReader(_Reader):
    def __init__(self, root: Path):
        self.root = root

    def names(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()


class _ZipReader(_Reader):
    def __init__(self, path: Path):
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DataError(f"data: {path} is not a readable zip archive ({e}); re-download or re-export it") from None

    def names(self) -> list[str]:
        return sorted(i.filename for i in self.zf.infolist() if not i.is_dir())

    def read(self, name: str) -> bytes:
        try:
            return self.zf.read(name)
        except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as e:
            raise DataError(f"data: {self.path} is truncated or corrupt at {name} ({e}); re-download it") from None


class _TarReader(_Reader):
    """Reads a (compressed) tar once, sequentially: random access into a .tar.gz is quadratic."""

    def __init__(self, path: Path):
        self.path = path
        self._files: dict[str, bytes] = {}
        try:
            with tarfile.open(path) as tf:
                for m in tf:
                    if m.isfile():
                        self._files[m.name] = tf.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"data: {path} is truncated or not a tar archive ({e}); re-download it") from None

    def names(self) -> list[str]:
        return sorted(self._files)

    def read(self, name: str) -> bytes:
        return self._files[name]


def _unpickle(raw: bytes, what: str, path: Path) -> dict:
    try:
        return pickle.loads(raw, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged batch file
        raise DataError(f"data: cannot read {what} in {path} ({e.__class__.__name__}); re-download it") from None


def _from_python(reader: _Reader, path: Path, fmt: str) -> Dataset:
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
    missing = [f for f in [*train_files, test_file, meta_file] if f is None]
    if missing:
        raise DataError(f"data: {path} lacks some of the official batch files; re-download it")

    def batch(f: str) -> tuple[np.ndarray, np.ndarray]:
        d = _unpickle(reader.read(f), f, path)
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x), np.asarray(d[label_key], dtype=np.int64)

    parts = [batch(f) for f in train_files]
    x_test, y_test = batch(test_file)
    classes = tuple(c.decode() for c in _unpickle(reader.read(meta_file), meta_file, path)[names_key])
    return checked(
        Dataset(
            dname,
            classes,
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            x_test,
            y_test,
            str(path),
            fmt,
            "",
        )
    )


def _decode_images(blobs: list[bytes], names: list[str]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(blobs), *IMAGE_SHAPE), dtype=np.uint8)
    for i, (blob, name) in enumerate(zip(blobs, names)):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                im.load()
                if im.mode != "RGB" or im.size != (32, 32):
                    raise DataError(
                        f"data: image {name} is {im.size[0]}x{im.size[1]} {im.mode}, expected 32x32 RGB; "
                        "CIFAR images must be 32x32x3"
                    )
                out[i] = np.asarray(im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"data: cannot decode image {name} ({e.__class__.__name__}); the file is corrupt") from None
    return out


def _parallel_decode(blobs: list[bytes], names: list[str], progress: bool) -> np.ndarray:
    from tqdm import tqdm

    chunk = 2500
    spans = [(i, min(i + chunk, len(blobs))) for i in range(0, len(blobs), chunk)]
    workers = min(len(spans), os.cpu_count() or 1)
    bar = tqdm(total=len(blobs), unit="img", desc="decoding", disable=not progress)
    parts = []
    with bar:
        if workers <= 1:
            for a, b in spans:
                parts.append(_decode_images(blobs[a:b], names[a:b]))
                bar.update(b - a)
        else:
            with ProcessPoolExecutor(workers) as pool:
                for (a, b), arr in zip(
                    spans, pool.map(_decode_images, *zip(*[(blobs[a:b], names[a:b]) for a, b in spans]))
                ):
                    parts.append(arr)
                    bar.update(b - a)
    return np.concatenate(parts) if parts else np.empty((0, *IMAGE_SHAPE), np.uint8)


def _from_images(reader: _Reader, path: Path, fmt: str, progress: bool) -> Dataset:
    names = reader.names()
    # Accept one common folder level above train/ and test/ (e.g. cifar10/train/...).
    splits: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    prefixes = set()
    for n in names:
        parts = PurePosixPath(n).parts
        if len(parts) >= 3 and parts[-3] in splits:
            prefixes.add(parts[:-3])
            splits[parts[-3]].setdefault(parts[-2], []).append(n)
    if not splits["train"] or not splits["test"]:
        raise DataError(f"data: {path} holds no train/<class>/* and test/<class>/* images; unknown layout or empty")
    if len(prefixes) > 1:
        raise DataError(
            f"data: {path} holds several train/ test/ trees ({sorted('/'.join(p) for p in prefixes)}); keep one"
        )
    prefix = "/".join(next(iter(prefixes)))
    train_cls, test_cls = set(splits["train"]), set(splits["test"])
    if train_cls != test_cls:
        only = sorted(train_cls ^ test_cls)
        raise DataError(
            f"data: {path}: class folders differ between train/ and test/ (only in one: {only[:5]}); make them match"
        )
    classes_file = f"{prefix}/classes.txt" if prefix else "classes.txt"
    if classes_file in names:
        classes = tuple(c.strip() for c in reader.read(classes_file).decode().splitlines() if c.strip())
        if set(classes) != train_cls:
            raise DataError(f"data: {classes_file} in {path} lists other classes than the folders; fix one of them")
    else:
        classes = tuple(sorted(train_cls))
    arrays = {}
    for split in ("train", "test"):
        files = [f for c in classes for f in sorted(splits[split][c])]
        labels = np.array([i for i, c in enumerate(classes) for _ in splits[split][c]], dtype=np.int64)
        blobs = reader.read_many(files)
        arrays[split] = (_parallel_decode(blobs, files, progress), labels)
    dname = {10: "cifar10", 100: "cifar100"}.get(len(classes), PurePosixPath(path.name).stem)
    return checked(Dataset(dname, classes, *arrays["train"], *arrays["test"], str(path), fmt, ""))


def _from_npz(path: Path) -> Dataset:
    try:
        z = np.load(path, allow_pickle=False)
        arrays = {k: z[k] for k in ARRAY_NAMES}
        classes = tuple(str(c) for c in z["classes"]) if "classes" in z.files else None
    except KeyError as e:
        raise DataError(f"data: {path} lacks array {e}; an .npz needs x_train, y_train, x_test, y_test") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"data: {path} is not a readable .npz ({e}); re-export it") from None
    for k in ("x_train", "x_test"):
        x = arrays[k]
        if x.dtype != np.uint8:
            raise DataError(f"data: {k} in {path} is {x.dtype}, expected uint8 pixels 0..255")
        if x.ndim == 4 and x.shape[1:] == (3, 32, 32):
            arrays[k] = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        elif x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"data: {k} in {path} has shape {x.shape}, expected (N, 32, 32, 3) or (N, 3, 32, 32)")
    for k in ("y_train", "y_test"):
        y = arrays[k]
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"data: {k} in {path} is {y.dtype}, expected integer labels")
        arrays[k] = y.astype(np.int64).reshape(-1)
    if classes is None:
        top = int(max(arrays["y_train"].max(initial=0), arrays["y_test"].max(initial=0)))
        n = 10 if top < 10 else 100
        classes = tuple(str(i) for i in range(n))
    dname = {10: "cifar10", 100: "cifar100"}.get(len(classes), path.stem)
    return checked(
        Dataset(
            dname,
            classes,
            arrays["x_train"],
            arrays["y_train"],
            arrays["x_test"],
            arrays["y_test"],
            str(path),
            "npz",
            "",
        )
    )
