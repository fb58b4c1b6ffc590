"""The decoded dataset every source turns into, and the checks it must pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError

IMAGE_SHAPE = (32, 32, 3)


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
    # each training image's file within the source (image folders and archives; () for the others),
    # so that a result keyed by dataset index can name the file a user would open
    train_paths: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def checked(ds: Dataset) -> Dataset:
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
