"""The content-keyed uint8 cache: a source is decoded once, later loads take a fraction of a second.

The cache lives under $MEMGATE_CACHE, else beside the data (.memgate_cache/), else ~/.cache/memgate.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..parsing import loads_json
from .dataset import Dataset
from .npz import ARRAY_NAMES
from .sources import decode_source

CACHE_VERSION = 3  # 2: meta.json records array shapes (damaged caches are detected); 3: training file paths


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


def _read_cache(folder: Path) -> Dataset | None:
    """The cached dataset, or None when absent or damaged (a damaged one is deleted, to be rebuilt).

    meta.json records every array's shape and dtype; a file that does not load to exactly those
    (truncated, edited, half-written by another tool) marks the whole folder as damaged.
    """
    meta_file = folder / "meta.json"
    if not meta_file.exists():
        return None
    try:
        meta = loads_json(meta_file.read_text())
        arrays = {k: np.load(folder / f"{k}.npy", allow_pickle=False) for k in ARRAY_NAMES}
        shapes = {k: [list(a.shape), str(a.dtype)] for k, a in arrays.items()}
        if shapes != meta["arrays"]:
            raise ValueError("shapes differ from meta.json")
        paths = tuple(meta["train_paths"])
        if paths and (len(paths) != len(arrays["y_train"]) or not all(isinstance(p, str) for p in paths)):
            raise ValueError("train_paths do not match the training images")
        return Dataset(
            classes=tuple(meta["classes"]),
            name=meta["name"],
            source=meta["source"],
            source_format=meta["source_format"],
            cache=str(folder),
            train_paths=paths,
            **arrays,
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(
            f"memgate: warning: damaged dataset cache {folder} ({e.__class__.__name__}); rebuilding it", file=sys.stderr
        )
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _remove_orphans(root: Path) -> None:
    """Delete temporary cache folders whose writer process is gone (killed mid-write)."""
    for tmp in root.glob("*.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_cache(folder: Path, ds: Dataset) -> Dataset:
    """Write the cache beside a temporary name, then rename; an unwritable cache is skipped with a warning."""
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(folder.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for k in ARRAY_NAMES:
            np.save(tmp / f"{k}.npy", getattr(ds, k))
        meta = {
            "name": ds.name,
            "classes": list(ds.classes),
            "source": ds.source,
            "source_format": ds.source_format,
            "arrays": {k: [list(getattr(ds, k).shape), str(getattr(ds, k).dtype)] for k in ARRAY_NAMES},
            "train_paths": list(ds.train_paths),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))  # written last: its presence marks completeness
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        print(
            f"memgate: warning: cannot write the dataset cache in {folder.parent} ({e.strerror}); "
            "loading uncached (set $MEMGATE_CACHE to a writable folder to cache)",
            file=sys.stderr,
        )
        return ds
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first; its cache is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return Dataset(**{**ds.__dict__, "cache": str(folder)})


def load_dataset(path: str | Path, progress: bool = False, use_cache: bool = True, resize: str = "none") -> Dataset:
    """Load a dataset from any supported source, through the cache (``resize``: data.resize, part of
    the cache key)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data: {path} does not exist; pass a CIFAR archive (.tar.gz/.zip), an image folder or an .npz")
    if not (path.is_file() or path.is_dir()):  # a FIFO or a device would block or never end
        raise DataError(f"data: {path} is neither a regular file nor a folder; pass an archive, a folder or an .npz")
    try:
        folder = cache_root(path) / f"{path.name}-{_source_key(path)}{'' if resize == 'none' else '-' + resize}"
    except OSError as e:
        raise DataError(f"data: cannot read {path} ({e.strerror}); check the path and its permissions") from None
    if use_cache:
        cached = _read_cache(folder)
        if cached is not None:
            return cached
    ds = decode_source(path, progress, resize)
    return _write_cache(folder, ds) if use_cache else ds
