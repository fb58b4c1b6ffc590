"""Which training images a run trains and validates on, and with which (possibly noisy) labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .dataset import Dataset
from .noise import apply_label_noise


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
