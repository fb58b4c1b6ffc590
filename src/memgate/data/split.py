"""Which training images a run trains and validates on, and with which (possibly noisy) labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .dataset import Dataset
from .noise import apply_label_noise
from .npz import read_user_arrays

EXCLUDE_LIMIT = 64 << 20  # bytes: a list of every CIFAR index as text is under 1 MB


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
    split = Split(train_idx, val_idx, noisy_labels, clean, mask)
    # Noise is drawn before exclusion, so a retrain without some samples keeps the others' labels.
    if not dcfg.exclude:
        return split
    return exclude(split, read_indices(dcfg.exclude), dcfg.exclude, read_labels(dcfg.exclude))


def read_indices(path: str | Path) -> np.ndarray:
    """Dataset training indices from .npy (integer array), .csv (an ``index`` column, else the first
    column) or a text file (one per line): a regular file of at most 64 MiB."""
    fix = "give a .npy, .csv or .txt of dataset indices"
    what = f"data: data.exclude={path}"
    if Path(path).expanduser().suffix == ".npy":
        raw = read_user_arrays(path, "data", fix, limit=EXCLUDE_LIMIT).get("")
        if raw is None:
            raise DataError(f"{what} is an .npz archive, not a .npy array; {fix}")
    else:
        p = Path(path).expanduser()
        try:
            if not p.is_file() or p.stat().st_size > EXCLUDE_LIMIT:
                raise DataError(f"{what} is not a regular file of at most {EXCLUDE_LIMIT:,d} bytes; {fix}")
            raw = _csv_column(p.read_text(encoding="utf-8"), what)
        except (OSError, ValueError) as e:
            raise DataError(f"data: cannot read data.exclude={path} ({e.__class__.__name__}); {fix}") from None
    raw = np.asarray(raw).reshape(-1)
    if raw.dtype.kind == "f" and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)):
        if len(raw) and np.abs(raw).max() > 2**53:
            raise DataError(f"{what} lists {raw[np.abs(raw).argmax()]:.0f}, not a dataset index; {fix}")
        raw = raw.astype(np.int64)
    if raw.dtype.kind not in "iu":
        raise DataError(f"{what} holds {raw.dtype} values; it must list integer dataset indices")
    if raw.dtype.kind == "u" and len(raw) and raw.max() > np.iinfo(np.int64).max:  # would wrap negative
        raise DataError(f"{what} lists {raw.max()}, not a dataset index; {fix}")
    return raw.astype(np.int64)


def _csv_column(text: str, what: str, name: str = "index") -> list[float] | None:
    """The column ``name`` of a CSV with a header (the first column for "index"; None if absent),
    or the first column of one without."""
    rows = [r.split(",") for r in text.splitlines() if r.strip()]
    col: int | None = 0
    if rows and not _is_number(rows[0][0]):  # a header
        names = [c.strip() for c in rows[0]]
        col = names.index(name) if name in names else (0 if name == "index" else None)
        rows = rows[1:]
        if not rows:
            raise DataError(
                f"{what} has a header line ({','.join(names)[:40]}) and no rows; list one index per line, "
                "e.g. a column 'index' with a row per sample"
            )
        for i, r in enumerate(rows, 2):
            if len(r) != len(names):
                raise DataError(f"{what}: row {i} has {len(r)} fields, its header {len(names)}; fix that row")
    elif name != "index":
        return None
    return None if col is None else [float(r[col]) for r in rows]


def read_labels(path: str | Path) -> np.ndarray | None:
    """The labels a CSV data.exclude file gives its samples (suspects.csv has them): its
    ``clean_label`` column (the original labels, written for runs with injected noise), else its
    ``label`` column, else None."""
    p = Path(path).expanduser()
    if p.suffix.lower() != ".csv":
        return None
    what = f"data: data.exclude={path}"
    try:
        text = p.read_text(encoding="utf-8")
        labels = _csv_column(text, what, "clean_label")
        labels = labels if labels is not None else _csv_column(text, what, "label")
    except (OSError, ValueError, DataError):
        return None  # read_indices says what is wrong with the file
    return None if labels is None else np.asarray(labels, dtype=np.int64)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def exclude(split: Split, drop: np.ndarray, source: str, labels: np.ndarray | None = None) -> Split:
    """``split`` without the training samples whose dataset index is in ``drop``; every index must
    be one of the split's training samples, and ``labels`` (the file's label column, if it has
    one) must be theirs: anything else means the file was made for other samples."""
    unknown = np.setdiff1d(drop, split.train_idx)
    if len(unknown):
        where = "the validation split" if np.isin(unknown[0], split.val_idx) else "no training sample of this run"
        raise DataError(
            f"data: data.exclude={source} lists index {int(unknown[0])}, which is {where} "
            f"({len(unknown)} such); list indices of this run's training split (suspects.csv gives them)"
        )
    if labels is not None and len(labels) == len(drop):
        order = np.argsort(split.train_idx)
        pos = order[np.searchsorted(split.train_idx[order], drop)]
        mine = (split.train_labels[pos], split.clean_labels[pos])
        wrong = min(float((labels != m).mean()) for m in mine)
        if wrong > 0.01:
            raise DataError(
                f"data: data.exclude={source}: its label column disagrees with this run's labels on "
                f"{100 * wrong:.1f}% of the listed samples: it was made for other samples (another dataset or order)"
            )
    keep = ~np.isin(split.train_idx, drop)
    if not keep.any():
        raise DataError(f"data: data.exclude={source} drops every training sample; nothing would be left to train on")
    return Split(
        split.train_idx[keep], split.val_idx, split.train_labels[keep], split.clean_labels[keep], split.noisy[keep]
    )
