import numpy as np
import pytest
from scipy.stats import chisquare

from memgate.data.noise import CIFAR100_COARSE, apply_label_noise, asymmetric_targets


@pytest.mark.parametrize("rate", [0.1, 0.4])
@pytest.mark.parametrize("classes", [10, 100])
def test_symmetric_noise_rate_and_mask(rate, classes):
    labels = np.random.default_rng(1).integers(0, classes, 50_000)
    noisy, mask = apply_label_noise(labels, classes, rate, "symmetric", seed=3)
    tol = 4 * np.sqrt(rate * (1 - rate) / len(labels))
    assert abs(mask.mean() - rate) < tol
    assert np.array_equal(mask, noisy != labels)
    # Uniform over the *other* classes: every wrong class appears about equally often.
    shifts = (noisy[mask] - labels[mask]) % classes
    assert shifts.min() >= 1
    counts = np.bincount(shifts, minlength=classes)[1:]
    assert len(counts) == classes - 1 and counts.min() > 0
    assert chisquare(counts).pvalue > 1e-4


def test_asymmetric_cifar10_mapping():
    labels = np.repeat(np.arange(10), 5000)
    noisy, mask = apply_label_noise(labels, 10, 0.3, "asymmetric", seed=0)
    pairs = set(zip(labels[mask].tolist(), noisy[mask].tolist()))
    assert pairs == {(9, 1), (2, 0), (4, 7), (3, 5), (5, 3)}
    for c in (0, 1, 6, 7, 8):
        assert not mask[labels == c].any()
    for c in (2, 3, 4, 5, 9):
        assert abs(mask[labels == c].mean() - 0.3) < 4 * np.sqrt(0.21 / 5000)


def test_asymmetric_cifar100_flips_within_superclass():
    t = asymmetric_targets(100)
    assert np.array_equal(CIFAR100_COARSE[t], CIFAR100_COARSE)
    assert (t != np.arange(100)).all()
    assert t[0] == 51  # apple -> mushroom (fruit and vegetables: apple, mushroom, orange, pear, sweet pepper)
    assert t[83] == 0  # sweet pepper wraps around to apple
    # Following the map five times returns every class to itself (a 5-cycle per super-class).
    c = np.arange(100)
    for _ in range(5):
        c = t[c]
    assert np.array_equal(c, np.arange(100))


def test_noise_is_seeded():
    labels = np.arange(1000) % 10
    a = apply_label_noise(labels, 10, 0.2, "symmetric", 7)
    b = apply_label_noise(labels, 10, 0.2, "symmetric", 7)
    c = apply_label_noise(labels, 10, 0.2, "symmetric", 8)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
