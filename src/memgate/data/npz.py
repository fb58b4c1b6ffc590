"""``.npz`` datasets: ``x_train, y_train, x_test, y_test`` (uint8 NHWC or NCHW), optional ``classes``.

Array headers are read and checked against the bytes the archive really holds before anything is
allocated, so a header that claims 1e11 images is refused instead of exhausting memory.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import IMAGE_SHAPE, Dataset, checked
from .readers import MAX_MEMBER_BYTES

ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")


def _claimed(f) -> tuple[tuple[int, ...], int, int]:
    """(shape, bytes, bytes per value) an .npy header claims, read from the open file ``f`` (left
    after the header)."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return shape, int(np.prod(shape, dtype=np.float64)) * dtype.itemsize, dtype.itemsize


def oversized_member(path: Path, limit: int = MAX_MEMBER_BYTES) -> str | None:
    """A description of what is wrong with an .npz's members, else None, checked before anything is
    allocated: a member that is no .npy array (numpy would hand back raw bytes), an array of an
    empty dtype, an array whose header claims more bytes than its member holds (or than ``limit``),
    or arrays that claim more than ``limit`` bytes together (many inflating members)."""
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            if not info.filename.endswith(".npy"):
                return f"member {info.filename!r} is not an .npy array"
            with zf.open(info) as f:
                shape, claimed, itemsize = _claimed(f)
            name, held = info.filename[:-4], f"{info.file_size:,d}"
            if itemsize == 0:
                return f"{name} has an empty dtype (0 bytes per value) and claims shape {shape}"
            if claimed > min(info.file_size, limit):
                return f"{name} claims shape {shape} ({claimed:,d} bytes) but holds {held} bytes"
            total += claimed
            if total > limit:
                return f"its arrays claim {total:,d} bytes together, over the {limit:,d}-byte limit"
    return None


def _npy_oversized(path: Path, limit: int) -> str | None:
    """The same check for a plain .npy file."""
    with open(path, "rb") as f:
        shape, claimed, itemsize = _claimed(f)
        held = path.stat().st_size - f.tell()
    if itemsize == 0:
        return f"its dtype is empty (0 bytes per value) and it claims shape {shape}"
    return (
        f"its header claims shape {shape} ({claimed:,d} bytes) but it holds {held:,d}"
        if claimed > min(held, limit)
        else None
    )


def read_user_arrays(path: str | Path, what: str, fix: str, limit: int = 1 << 30) -> dict[str, np.ndarray]:
    """The arrays of a user's .npz (a plain .npy comes back as ``{"": array}``), read safely: a
    regular file (no device, fifo or folder) of at most ``limit`` bytes, every header checked before
    allocation, no pickles. ``what`` prefixes the one-line DataError, ``fix`` ends it."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{what}: {path} is {'missing' if not p.exists() else 'not a regular file'}; {fix}")
    if p.stat().st_size > limit:
        raise DataError(f"{what}: {path} is {p.stat().st_size:,d} bytes, over the {limit:,d}-byte limit; {fix}")
    try:
        plain = not zipfile.is_zipfile(p)
        bad = _npy_oversized(p, limit) if plain else oversized_member(p, limit)
        if bad:
            raise DataError(f"{what}: {path}: {bad}; the file is damaged or crafted, {fix}")
        if plain:
            return {"": np.load(p, allow_pickle=False)}
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{what}: cannot read {path} ({e.__class__.__name__}); {fix}") from None


def _check_headers(path: Path) -> None:
    """Each array's claimed size must fit the archive member holding it, and the size limit."""
    bad = oversized_member(path)
    if bad:
        raise DataError(f"data: {bad} in {path}; the file is corrupt or crafted, re-export it")


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], tuple[str, ...] | None]:
    try:
        _check_headers(path)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ARRAY_NAMES}
            classes = tuple(str(c) for c in z["classes"]) if "classes" in z.files else None
    except KeyError as e:
        raise DataError(f"data: {path} lacks array {e}; an .npz needs x_train, y_train, x_test, y_test") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise DataError(f"data: {path} is not a readable .npz ({e.__class__.__name__}: {e}); re-export it") from None
    return arrays, classes


def _images(x: np.ndarray, k: str, path: Path) -> np.ndarray:
    if x.dtype != np.uint8:
        raise DataError(f"data: {k} in {path} is {x.dtype}, expected uint8 pixels 0..255")
    if x.ndim == 4 and x.shape[1:] == (3, 32, 32):
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"data: {k} in {path} has shape {x.shape}, expected (N, 32, 32, 3) or (N, 3, 32, 32)")
    return x


def _inferred_classes(y_train: np.ndarray, y_test: np.ndarray, path: Path) -> tuple[str, ...]:
    """Without a ``classes`` array: 10 classes when every label is below 10, 100 when more than 50
    distinct labels all lie below 100 (a CIFAR-100 set); anything else needs the classes stated."""
    labels = np.concatenate([y_train, y_test])
    top, distinct = int(labels.max(initial=0)), len(np.unique(labels))
    n = 10 if top < 10 else 100 if (distinct > 50 and top < 100) else None
    if n is None:
        raise DataError(
            f"data: {path}: label {top} is out of range for 10 classes (0..9) and the labels do not look like "
            "CIFAR-100; fix the labels, or add a 'classes' array naming every class"
        )
    return tuple(str(i) for i in range(n))


def from_npz(path: Path) -> Dataset:
    arrays, classes = _read_arrays(path)
    for k in ("x_train", "x_test"):
        arrays[k] = _images(arrays[k], k, path)
    for k in ("y_train", "y_test"):
        if not np.issubdtype(arrays[k].dtype, np.integer):
            raise DataError(f"data: {k} in {path} is {arrays[k].dtype}, expected integer labels")
        arrays[k] = arrays[k].astype(np.int64).reshape(-1)
    if classes is None:
        classes = _inferred_classes(arrays["y_train"], arrays["y_test"], path)
    dname = {10: "cifar10", 100: "cifar100"}.get(len(classes), path.stem)
    return checked(Dataset(dname, classes, *(arrays[k] for k in ARRAY_NAMES), str(path), "npz", ""))
