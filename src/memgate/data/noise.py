"""Label noise with a recorded ground truth: symmetric, or the standard asymmetric class flips."""

from __future__ import annotations

import numpy as np

from ..errors import DataError

# CIFAR-10 (official label order): truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog.
CIFAR10_ASYMMETRIC = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

# CIFAR-100: official coarse (super-class) label of each fine label, in the official fine order.
CIFAR100_COARSE = np.array(
    [
        4,
        1,
        14,
        8,
        0,
        6,
        7,
        7,
        18,
        3,
        3,
        14,
        9,
        18,
        7,
        11,
        3,
        9,
        7,
        11,
        6,
        11,
        5,
        10,
        7,
        6,
        13,
        15,
        3,
        15,
        0,
        11,
        1,
        10,
        12,
        14,
        16,
        9,
        11,
        5,
        5,
        19,
        8,
        8,
        15,
        13,
        14,
        17,
        18,
        10,
        16,
        4,
        17,
        4,
        2,
        0,
        17,
        4,
        18,
        17,
        10,
        3,
        2,
        12,
        12,
        16,
        12,
        1,
        9,
        19,
        2,
        10,
        0,
        1,
        16,
        12,
        9,
        13,
        15,
        13,
        16,
        19,
        2,
        4,
        6,
        19,
        5,
        5,
        8,
        19,
        18,
        1,
        2,
        15,
        6,
        0,
        17,
        8,
        14,
        13,
    ]
)


def asymmetric_targets(num_classes: int) -> np.ndarray:
    """Class each class flips to under asymmetric noise (itself where it never flips)."""
    target = np.arange(num_classes)
    if num_classes == 10:
        for src, dst in CIFAR10_ASYMMETRIC.items():
            target[src] = dst
    elif num_classes == 100:
        # Within each super-class, fine classes (in label order) flip circularly to the next one.
        for coarse in range(20):
            members = np.flatnonzero(CIFAR100_COARSE == coarse)
            target[members] = np.roll(members, -1)
    else:
        raise DataError(
            f"data: asymmetric noise is defined for CIFAR-10 and CIFAR-100 only, not {num_classes} classes; "
            "use data.noise_type=symmetric"
        )
    return target


def apply_label_noise(
    labels: np.ndarray, num_classes: int, rate: float, kind: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, mask of changed labels). Each label is corrupted with probability ``rate``:
    symmetric noise draws uniformly among the other classes; asymmetric noise applies the class map
    (so classes the map leaves alone never change)."""
    labels = np.asarray(labels, dtype=np.int64)
    if rate == 0:
        return labels.copy(), np.zeros(len(labels), dtype=bool)
    rng = np.random.default_rng(seed)
    corrupt = rng.random(len(labels)) < rate
    if kind == "symmetric":
        shift = rng.integers(1, num_classes, len(labels))
        new = np.where(corrupt, (labels + shift) % num_classes, labels)
    elif kind == "asymmetric":
        new = np.where(corrupt, asymmetric_targets(num_classes)[labels], labels)
    else:
        raise DataError(f"data: unknown noise type {kind!r} (allowed: symmetric, asymmetric)")
    return new, new != labels
