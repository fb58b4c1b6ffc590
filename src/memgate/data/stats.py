"""Pixel statistics: the normalisation constants a run uses and a dataset's own counts and moments."""

from __future__ import annotations

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .dataset import Dataset

# Released code normalises both datasets with these constants (SPEC.md).
RELEASED_NORM = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


# The public pretrained CIFAR ResNets (akamaster/pytorch_resnet_cifar10) normalise with ImageNet's.
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DATASET_NORM = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


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
    if dcfg.normalize == "imagenet":
        return IMAGENET_NORM
    if name not in DATASET_NORM:
        raise DataError(f"data: no published statistics for {name}; use data.normalize=released")
    return DATASET_NORM[name]
