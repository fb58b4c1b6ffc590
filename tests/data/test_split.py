import numpy as np
from datafactory import (
    CLASSES,
)

from memgate.config import DataConfig
from memgate.data import make_split
from memgate.data.split import split_indices, stratified_subset


def test_split_is_seeded_disjoint_and_complete():
    tr, va = split_indices(50_000, 5_000, seed=0)
    assert len(va) == 5_000 and len(tr) == 45_000
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(50_000))
    perm = np.random.RandomState(0).permutation(50_000)
    assert set(va) == set(perm[:5_000])  # the released code's rule
    tr2, va2 = split_indices(50_000, 5_000, seed=0)
    assert np.array_equal(va, va2)


def test_stratified_subset_counts_exact():
    labels = np.repeat(np.arange(10), 100)
    idx = np.arange(1000)
    sub = stratified_subset(idx, labels, 205, seed=0)
    counts = np.bincount(labels[sub], minlength=10)
    assert counts.sum() == 205 and counts.max() - counts.min() == 1
    assert len(set(sub)) == 205


def test_make_split_carries_noise_and_keeps_val_clean():
    x = np.zeros((1000, 32, 32, 3), np.uint8)
    from memgate.data import Dataset

    y = np.repeat(np.arange(10), 100)
    ds = Dataset("cifar10", tuple(CLASSES), x, y, x[:10], y[:10], "", "npz", "")
    sp = make_split(ds, DataConfig(val_size=100, label_noise=0.4))
    assert len(set(sp.train_idx) & set(sp.val_idx)) == 0
    assert np.array_equal(sp.clean_labels, y[sp.train_idx])
    assert np.array_equal(sp.noisy, sp.train_labels != sp.clean_labels)
    assert 0.3 < sp.noisy.mean() < 0.5
    # The split is the same for every run seed; val labels are the dataset's own.
    sp2 = make_split(ds, DataConfig(val_size=100, label_noise=0.4))
    assert np.array_equal(sp.val_idx, sp2.val_idx) and np.array_equal(sp.train_labels, sp2.train_labels)
