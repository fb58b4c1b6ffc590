"""Which decoder a path needs, detected from the path itself.

* the official "python version": ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` or
  their extracted folders ``cifar-10-batches-py/`` / ``cifar-100-python/`` (pickled.py);
* image-folder trees ``train/<class>/*`` + ``test/<class>/*`` (any image Pillow reads, optional
  ``classes.txt``), as a folder or inside a zip / tar archive (images.py);
* ``.npz`` with ``x_train, y_train, x_test, y_test`` (uint8, NHWC or NCHW) (npz.py).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..errors import DataError
from .dataset import Dataset
from .images import from_images
from .npz import from_npz
from .pickled import from_python
from .readers import DirReader, Reader, TarReader, ZipReader


def decode_source(path: Path, progress: bool = False, resize: str = "none") -> Dataset:
    """Decode any supported source; ``resize`` brings image files of other sizes to 32x32."""
    name = path.name.lower()
    if path.is_dir():
        if (path / "data_batch_1").exists() or (path / "train").is_file():
            return from_python(DirReader(path), path, "python-folder")
        for sub in ("cifar-10-batches-py", "cifar-100-python"):
            if (path / sub).is_dir():
                return from_python(DirReader(path / sub), path, "python-folder")
        return from_images(DirReader(path), path, "image-folder", progress, resize)
    if name.endswith(".npz"):
        return from_npz(path)
    if name.endswith(".zip"):
        reader: Reader = ZipReader(path)
        fmt = "image-zip"
    elif name.endswith((".tar", ".tar.gz", ".tgz")):
        reader = TarReader(path)
        fmt = "image-tar"
    else:
        raise DataError(f"data: unknown format for {path}; expected .tar.gz/.tgz/.tar/.zip, .npz, or a folder")
    names = reader.names()
    if not names:
        raise DataError(f"data: {path} is empty (expected CIFAR python batches or train/<class>/* images)")
    # Only the python version has a *file* named data_batch_1 (CIFAR-10) or train (CIFAR-100).
    if any(PurePosixPath(n).name in ("data_batch_1", "train") for n in names):
        return from_python(reader, path, "python-archive")
    return from_images(reader, path, fmt, progress, resize)
