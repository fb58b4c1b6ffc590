"""The content-keyed uint8 cache: a source is decoded once, later loads take a fraction of a second.

The cache lives under $MEMGATE_CACHE, else beside the data (.memgate_cache/), else ~/.cache/memgate.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset
from .sources import ARRAY_NAMES, decode_source

CACHE_VERSION = 1


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
    meta_file = folder / "meta.json"
    if not meta_file.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        arrays = {k: np.load(folder / f"{k}.npy") for k in ARRAY_NAMES}
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
    for k in ARRAY_NAMES:
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
