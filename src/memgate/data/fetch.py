"""Where a run's data comes from: data.path, a known file in $MEMGATE_DATA, or the official download."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from pathlib import Path

from ..config import DataConfig
from ..errors import DataError

OFFICIAL = {
    "cifar10": ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}


DOWNLOAD_URL = "https://www.cs.toronto.edu/~kriz/"


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
