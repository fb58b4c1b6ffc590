"""CIFAR-10/100 from any of the formats users have, decoded once into a uint8 cache.

Sources (detected from the path):
  * the official "python version": ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` or
    their extracted folders ``cifar-10-batches-py/`` / ``cifar-100-python/``;
  * image-folder trees ``train/<class>/*`` + ``test/<class>/*`` (any image Pillow reads, optional
    ``classes.txt``), as a folder or inside a zip / tar archive;
  * ``.npz`` with ``x_train, y_train, x_test, y_test`` (uint8, NHWC or NCHW).

Decoded arrays are cached (keyed by the source's content) beside the data, under $MEMGATE_CACHE,
or under ~/.cache/memgate, so a second load takes a fraction of a second.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import tarfile
import urllib.request
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .config import DataConfig
from .errors import DataError
from .noise import apply_label_noise

CACHE_VERSION = 1
IMAGE_SHAPE = (32, 32, 3)

# Released code normalises both datasets with these constants (SPEC.md).
RELEASED_NORM = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
DATASET_NORM = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

OFFICIAL = {
    "cifar10": ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}
DOWNLOAD_URL = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class Dataset:
    name: str  # cifar10, cifar100, or the source's stem for other class counts
    classes: tuple[str, ...]
    x_train: np.ndarray  # (N, 32, 32, 3) uint8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # the path it was loaded from
    source_format: str  # python-archive | python-folder | image-folder | image-zip | image-tar | npz
    cache: str  # cache folder, "" when not cached

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ----------------------------------------------------------------------------- locating data


def find_data(dcfg: DataConfig, download: bool = True) -> Path:
    """data.path, else a known file name in $MEMGATE_DATA, else the official archive (downloaded)."""
    if dcfg.path:
        return Path(dcfg.path).expanduser()
    names = {
        "cifar10": ["cifar10.zip", "cifar-10-python.tar.gz", "cifar-10-batches-py", "cifar10.npz", "cifar10"],
        "cifar100": ["cifar100.zip", "cifar-100-python.tar.gz", "cifar-100-python", "cifar100.npz", "cifar100"],
    }[dcfg.dataset]
    env = os.environ.get("MEMGATE_DATA")
    roots = [Path(env).expanduser()] if env else []
    roots.append(Path.home() / ".cache" / "memgate" / "downloads")
    for root in roots:
        for name in names:
            if (root / name).exists():
                return root / name
    if not download:
        raise DataError(f"data: no {dcfg.dataset} found; set data.path or put {names[0]} in $MEMGATE_DATA")
    return download_official(dcfg.dataset, roots[0])


def download_official(dataset: str, root: Path) -> Path:
    fname, md5 = OFFICIAL[dataset]
    target = root / fname
    root.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(DOWNLOAD_URL + fname, timeout=15) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"data: cannot download {fname} ({e.__class__.__name__}: offline?); put {fname} or "
            f"{dataset}.zip in the folder named by $MEMGATE_DATA (now {os.environ.get('MEMGATE_DATA', 'unset')}) "
            "or pass data.path=PATH"
        ) from None
    digest = hashlib.md5(tmp.read_bytes()).hexdigest()
    if digest != md5:
        tmp.unlink()
        raise DataError(f"data: downloaded {fname} has md5 {digest}, expected {md5}; try again")
    os.replace(tmp, target)
    return target


# ----------------------------------------------------------------------------- cache


def _source_key(path: Path) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    if path.is_file():
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    else:  # a folder: hashing 60k files' bytes would cost more than decoding them; use their stats
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def cache_root(path: Path) -> Path:
    env = os.environ.get("MEMGATE_CACHE")
    if env:
        return Path(env).expanduser()
    beside = path.resolve().parent / ".memgate_cache"
    if os.access(path.resolve().parent, os.W_OK):
        return beside
    return Path.home() / ".cache" / "memgate"


_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _read_cache(folder: Path) -> Dataset | None:
    meta_file = folder / "meta.json"
    if not meta_file.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        arrays = {k: np.load(folder / f"{k}.npy") for k in _ARRAYS}
    except (OSError, ValueError):
        return None  # a damaged cache is rebuilt, never trusted
    return Dataset(
        classes=tuple(meta["classes"]),
        name=meta["name"],
        source=meta["source"],
        source_format=meta["source_format"],
        cache=str(folder),
        **arrays,
    )


def _write_cache(folder: Path, ds: Dataset) -> Dataset:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for k in _ARRAYS:
        np.save(tmp / f"{k}.npy", getattr(ds, k))
    meta = {"name": ds.name, "classes": list(ds.classes), "source": ds.source, "source_format": ds.source_format}
    (tmp / "meta.json").write_text(json.dumps(meta))  # written last: its presence marks completeness
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first; its cache is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return Dataset(**{**ds.__dict__, "cache": str(folder)})


def load_dataset(path: str | Path, progress: bool = False, use_cache: bool = True) -> Dataset:
    """Load a dataset from any supported source, through the cache."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data: {path} does not exist; pass a CIFAR archive (.tar.gz/.zip), an image folder or an .npz")
    folder = cache_root(path) / f"{path.name}-{_source_key(path)}"
    if use_cache:
        cached = _read_cache(folder)
        if cached is not None:
            return cached
    ds = decode_source(path, progress)
    return _write_cache(folder, ds) if use_cache else ds


# ----------------------------------------------------------------------------- decoding


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
    return _checked(
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
    return _checked(Dataset(dname, classes, *arrays["train"], *arrays["test"], str(path), fmt, ""))


def _from_npz(path: Path) -> Dataset:
    try:
        z = np.load(path, allow_pickle=False)
        arrays = {k: z[k] for k in _ARRAYS}
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
    return _checked(
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


def _checked(ds: Dataset) -> Dataset:
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        if len(x) != len(y):
            raise DataError(f"data: {ds.source}: {len(x)} {split} images but {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"data: {ds.source} has no {split} images")
        bad = (y < 0) | (y >= ds.num_classes)
        if bad.any():
            raise DataError(
                f"data: {ds.source}: y_{split} holds label {int(y[bad][0])}, out of range for "
                f"{ds.num_classes} classes (0..{ds.num_classes - 1}); fix the labels or list the classes"
            )
    return ds


# ----------------------------------------------------------------------------- statistics


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 NHWC images, in [0, 1], exact (from pixel histograms)."""
    v = np.arange(256, dtype=np.float64)
    mean, std = [], []
    for c in range(x.shape[-1]):
        h = np.bincount(x[..., c].ravel(), minlength=256).astype(np.float64)
        m = (h * v).sum() / h.sum()
        mean.append(m / 255)
        std.append(float(np.sqrt((h * v * v).sum() / h.sum() - m * m)) / 255)
    return mean, std


def dataset_info(ds: Dataset) -> dict:
    mean, std = channel_stats(ds.x_train)
    return {
        "name": ds.name,
        "classes": list(ds.classes),
        "train": int(len(ds.y_train)),
        "test": int(len(ds.y_test)),
        "per_class_train": np.bincount(ds.y_train, minlength=ds.num_classes).tolist(),
        "per_class_test": np.bincount(ds.y_test, minlength=ds.num_classes).tolist(),
        "image_shape": list(ds.x_train.shape[1:]),
        "mean": mean,
        "std": std,
        "source": ds.source,
        "source_format": ds.source_format,
        "cache": ds.cache,
    }


def normalization(dcfg: DataConfig, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if dcfg.normalize == "released":
        return RELEASED_NORM
    if name not in DATASET_NORM:
        raise DataError(f"data: no published statistics for {name}; use data.normalize=released")
    return DATASET_NORM[name]


# ----------------------------------------------------------------------------- split, subset, noise


@dataclass(frozen=True)
class Split:
    """Which training-set images a run trains and validates on, and with which labels."""

    train_idx: np.ndarray  # indices into Dataset.x_train, sorted
    val_idx: np.ndarray
    train_labels: np.ndarray  # labels used for training (noisy where ``noisy``), aligned with train_idx
    clean_labels: np.ndarray  # the dataset's labels, aligned with train_idx
    noisy: np.ndarray  # bool, aligned with train_idx


def split_indices(n: int, val_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Released code: numpy seed 0, the first ``val_size`` of a permutation form the validation set."""
    if val_size >= n:
        raise DataError(f"data: data.val_size={val_size} leaves no training images (the set has {n})")
    perm = np.random.RandomState(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def stratified_subset(idx: np.ndarray, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` of ``idx`` with the classes in proportion (remainder to the first classes), seeded."""
    if size >= len(idx):
        return idx
    rng = np.random.RandomState(seed + 1)
    classes = np.unique(labels[idx])
    base, extra = divmod(size, len(classes))
    picked = []
    for i, c in enumerate(classes):
        members = idx[labels[idx] == c]
        k = min(len(members), base + (i < extra))
        picked.append(rng.choice(members, k, replace=False))
    return np.sort(np.concatenate(picked))


def make_split(ds: Dataset, dcfg: DataConfig) -> Split:
    train_idx, val_idx = split_indices(len(ds.y_train), dcfg.val_size, dcfg.split_seed)
    if dcfg.train_subset:
        train_idx = stratified_subset(train_idx, ds.y_train, dcfg.train_subset, dcfg.split_seed)
    clean = ds.y_train[train_idx]
    noisy_labels, mask = apply_label_noise(clean, ds.num_classes, dcfg.label_noise, dcfg.noise_type, dcfg.noise_seed)
    return Split(train_idx, val_idx, noisy_labels, clean, mask)
