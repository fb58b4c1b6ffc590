import io
import json
import time

import numpy as np
import pytest
import torch
from datafactory import (
    CLASSES,
    image_tree_files,
    make_arrays,
    png,
    python_version_files,
    write_tar,
    write_tree,
    write_zip,
)
from PIL import Image
from scipy.stats import chisquare

from memgate.augment import PAD, DeviceData, crop_flip, epoch_plan, normalize, pack_padded
from memgate.cli import main
from memgate.config import DataConfig
from memgate.data import RELEASED_NORM, load_dataset, make_split, split_indices, stratified_subset
from memgate.noise import CIFAR100_COARSE, apply_label_noise, asymmetric_targets


@pytest.fixture
def arrays():
    return make_arrays()


def _all_formats(tmp_path, arrays):
    tree = image_tree_files(*arrays)
    x_train, y_train, x_test, y_test = arrays
    np.savez(tmp_path / "nhwc.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    np.savez(
        tmp_path / "nchw.npz",
        x_train=x_train.transpose(0, 3, 1, 2),
        y_train=y_train,
        x_test=x_test.transpose(0, 3, 1, 2),
        y_test=y_test,
        classes=np.array(CLASSES),
    )
    return {
        "python-archive": write_tar(tmp_path / "cifar-10-python.tar.gz", python_version_files(*arrays)),
        "python-folder": write_tree(tmp_path / "pyfolder", python_version_files(*arrays)),
        "image-zip": write_zip(tmp_path / "cifar10.zip", tree),
        "image-tar": write_tar(tmp_path / "images.tar.gz", tree),
        "image-folder": write_tree(tmp_path / "tree", tree) / "cifar10",
        "npz": tmp_path / "nhwc.npz",
        "npz-nchw": tmp_path / "nchw.npz",
    }


def test_every_format_gives_identical_arrays(tmp_path, arrays):
    x_train, y_train, x_test, y_test = arrays
    for fmt, path in _all_formats(tmp_path, arrays).items():
        ds = load_dataset(path)
        assert ds.source_format == fmt.replace("-nchw", ""), fmt
        assert np.array_equal(ds.x_train, x_train), fmt
        assert np.array_equal(ds.y_train, y_train), fmt
        assert np.array_equal(ds.x_test, x_test), fmt
        assert np.array_equal(ds.y_test, y_test), fmt
        assert ds.name == "cifar10"
        if fmt != "npz":
            assert ds.classes == tuple(CLASSES), fmt


def test_cache_is_reused_and_keyed_by_content(tmp_path, arrays, monkeypatch):
    monkeypatch.setenv("MEMGATE_CACHE", str(tmp_path / "cache"))
    path = write_zip(tmp_path / "d.zip", image_tree_files(*arrays))
    first = load_dataset(path)
    assert first.cache.startswith(str(tmp_path / "cache"))
    second = load_dataset(path)
    assert second.cache == first.cache and np.array_equal(second.x_train, first.x_train)
    # Other content under the same name gets another cache entry.
    x2 = arrays[0].copy()
    x2[0, 0, 0, 0] ^= 1
    write_zip(path, image_tree_files(x2, *arrays[1:]))
    third = load_dataset(path)
    assert third.cache != first.cache and third.x_train[0, 0, 0, 0] == x2[0, 0, 0, 0]


def test_classes_txt_fixes_label_order(tmp_path, arrays):
    names = list(reversed(CLASSES))  # not sorted: only classes.txt can give this order
    ds = load_dataset(write_zip(tmp_path / "r.zip", image_tree_files(*arrays, names=names)))
    assert ds.classes == tuple(names)
    assert np.array_equal(ds.y_train, arrays[1])


def test_cli_data_info_json(tmp_path, arrays, capsys):
    path = write_zip(tmp_path / "d.zip", image_tree_files(*arrays))
    assert main(["data", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train"] == 30 and info["test"] == 20
    assert info["per_class_train"] == [3] * 10
    assert info["classes"] == CLASSES
    assert np.allclose(info["mean"], arrays[0].reshape(-1, 3).mean(0) / 255)
    assert np.allclose(info["std"], arrays[0].reshape(-1, 3).std(0) / 255)


# ----------------------------------------------------------------------------- bad input


def _bad_inputs(tmp_path, arrays):
    tree = image_tree_files(*arrays)
    good_zip = write_zip(tmp_path / "good.zip", tree).read_bytes()
    (tmp_path / "truncated.zip").write_bytes(good_zip[: len(good_zip) // 2])
    tar = write_tar(tmp_path / "t.tar.gz", python_version_files(*arrays)).read_bytes()
    (tmp_path / "truncated.tar.gz").write_bytes(tar[: len(tar) // 2])
    corrupt = dict(tree)
    corrupt["cifar10/train/cat/00009.png"] = b"\x89PNG\r\n\x1a\nthis is not a png"
    small = dict(tree)
    small["cifar10/train/cat/00009.png"] = png(np.zeros((31, 32, 3), np.uint8))
    gray = dict(tree)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(buf, format="PNG")
    gray["cifar10/test/dog/00001.png"] = buf.getvalue()
    differ = {k: v for k, v in tree.items() if "/test/truck/" not in k}
    x_train, y_train, x_test, y_test = arrays
    y_bad = y_train.copy()
    y_bad[3] = 10
    np.savez(
        tmp_path / "labels.npz", x_train=x_train, y_train=y_bad, x_test=x_test, y_test=y_test, classes=np.array(CLASSES)
    )
    np.savez(tmp_path / "negative.npz", x_train=x_train, y_train=-y_train, x_test=x_test, y_test=y_test)
    np.savez(tmp_path / "shape.npz", x_train=x_train[:, :28], y_train=y_train, x_test=x_test, y_test=y_test)
    (tmp_path / "data.rar").write_bytes(b"Rar!")
    write_zip(tmp_path / "empty.zip", {})
    return {
        "missing": (tmp_path / "nope.zip", "does not exist"),
        "empty": (tmp_path / "empty.zip", "empty"),
        "truncated zip": (tmp_path / "truncated.zip", "zip"),
        "truncated tar": (tmp_path / "truncated.tar.gz", "truncated"),
        "corrupt image": (
            write_zip(tmp_path / "corrupt.zip", corrupt),
            "cannot decode image cifar10/train/cat/00009.png",
        ),
        "not 32x32": (write_zip(tmp_path / "small.zip", small), "32x31 RGB, expected 32x32 RGB"),
        "not rgb": (write_zip(tmp_path / "gray.zip", gray), "expected 32x32 RGB"),
        "class folders differ": (write_zip(tmp_path / "differ.zip", differ), "class folders differ"),
        "labels out of range": (tmp_path / "labels.npz", "label 10, out of range"),
        "negative labels": (tmp_path / "negative.npz", "out of range"),
        "npz shape": (tmp_path / "shape.npz", "expected (N, 32, 32, 3)"),
        "unknown format": (tmp_path / "data.rar", "unknown format"),
    }


def test_bad_inputs_exit_2_with_one_line(tmp_path, arrays, capsys):
    for what, (path, needle) in _bad_inputs(tmp_path, arrays).items():
        assert main(["data", "info", str(path)]) == 2, what
        err = capsys.readouterr().err.strip()
        assert err.startswith("memgate: error: data: "), (what, err)
        assert "\n" not in err, what
        assert needle in err, (what, err)


# ----------------------------------------------------------------------------- split and subset


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


# ----------------------------------------------------------------------------- noise


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


# ----------------------------------------------------------------------------- augmentation


def _images(n=64):
    return torch.from_numpy(np.random.default_rng(0).integers(1, 256, (n, 32, 32, 3), dtype=np.uint8))


def test_crops_stay_inside_padded_image_and_padding_is_zero():
    x = _images()  # no zero pixels in the images themselves
    packed = pack_padded(x)
    padded = packed.view(torch.uint8).view(len(x), 40, 40, 4)[..., :3]
    plan = epoch_plan(len(x), seed=0, epoch=0)
    idx = torch.arange(len(x))
    out = crop_flip(packed, idx, plan.dy, plan.dx, plan.flip)
    assert plan.dy.min() >= 0 and plan.dy.max() <= 2 * PAD and plan.dx.max() <= 2 * PAD
    for i in range(len(x)):
        dy, dx = int(plan.dy[i]), int(plan.dx[i])
        window = padded[i, dy : dy + 32, dx : dx + 32]
        expected = window.flip(1) if plan.flip[i] else window
        assert torch.equal(out[i], expected)
        # Pixels that came from the padding are exactly zero; all others come from the image.
        zero = (out[i] == 0).all(-1)
        assert int(zero.sum()) == 32 * 32 - (32 - abs(dy - PAD)) * (32 - abs(dx - PAD))


def test_flip_probability_is_half_and_crops_cover_all_offsets():
    plan = epoch_plan(50_000, seed=1, epoch=0)
    assert abs(plan.flip.float().mean().item() - 0.5) < 4 * np.sqrt(0.25 / 50_000)
    assert set(plan.dy.tolist()) == set(range(2 * PAD + 1))


def test_same_seed_same_batch_other_epoch_other_batch():
    x = _images(256)
    packed = pack_padded(x)
    mean = torch.tensor(RELEASED_NORM[0]).view(1, 3, 1, 1) * 255
    std = torch.tensor(RELEASED_NORM[1]).view(1, 3, 1, 1) * 255

    def batch(seed, epoch):
        p = epoch_plan(256, seed, epoch)
        pos = p.order[:128]
        return normalize(crop_flip(packed, pos, p.dy[pos], p.dx[pos], p.flip[pos]), mean, std)

    assert torch.equal(batch(0, 3), batch(0, 3))
    assert not torch.equal(batch(0, 3), batch(0, 4))
    assert not torch.equal(batch(0, 3), batch(1, 3))


def test_no_augment_plan_is_identity_crop():
    x = _images(8)
    p = epoch_plan(8, 0, 0, augment=False)
    out = crop_flip(pack_padded(x), torch.arange(8), p.dy, p.dx, p.flip)
    assert torch.equal(out, x)


def test_normalize_matches_reference_formula():
    x = _images(4)
    mean, std = RELEASED_NORM
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255
    s = torch.tensor(std).view(1, 3, 1, 1) * 255
    ref = (x.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    assert torch.allclose(normalize(x, m, s), ref, atol=1e-5)


# ----------------------------------------------------------------------------- the real data


def test_shared_cifar10_counts_and_published_means(shared_cifar10):
    ds = load_dataset(shared_cifar10)
    assert len(ds.y_train) == 50_000 and len(ds.y_test) == 10_000
    assert np.bincount(ds.y_train).tolist() == [5000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    from memgate.data import channel_stats

    mean, std = channel_stats(ds.x_train)
    assert np.allclose(mean, [0.4914, 0.4822, 0.4465], atol=6e-5)
    assert np.allclose(std, [0.2470, 0.2435, 0.2616], atol=6e-5)
    t = time.perf_counter()
    load_dataset(shared_cifar10)
    assert time.perf_counter() - t < 10  # cached; the benchmark measures the real figure
    # A device-resident split builds and yields normalised channels_last batches.
    dd = DeviceData(ds, make_split(ds, DataConfig()), *RELEASED_NORM, torch.device("cpu"))
    sp = make_split(ds, DataConfig())
    batch = dd.train_batch(epoch_plan(dd.n_train, 0, 0), 0, 128)
    assert batch.x.shape == (128, 3, 32, 32) and batch.x.dtype == torch.float32
    assert batch.x.is_contiguous(memory_format=torch.channels_last)
    # Every batch carries the samples' dataset indices: its labels are the dataset's labels there.
    assert torch.equal(batch.index, torch.from_numpy(sp.train_idx)[batch.pos])
    assert torch.equal(batch.y, torch.from_numpy(ds.y_train)[batch.index])
    # Two ranks split the same global batch between them.
    halves = [dd.train_batch(epoch_plan(dd.n_train, 0, 0), 0, 128, r, 2).pos for r in (0, 1)]
    assert sorted(torch.cat(halves).tolist()) == sorted(batch.pos.tolist())


def test_offline_download_says_where_to_put_the_files(tmp_path, monkeypatch):
    import urllib.error

    from memgate import data as data_mod
    from memgate.errors import DataError

    def offline(*a, **kw):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data_mod.urllib.request, "urlopen", offline)
    monkeypatch.setenv("MEMGATE_DATA", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError, match="cannot download cifar-10-python.tar.gz.*MEMGATE_DATA") as e:
        data_mod.find_data(DataConfig())
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "nothing-here").glob("*.part"))


def test_download_with_wrong_checksum_is_refused(tmp_path, monkeypatch):
    from memgate import data as data_mod
    from memgate.errors import DataError

    monkeypatch.setattr(data_mod.urllib.request, "urlopen", lambda *a, **kw: io.BytesIO(b"not the archive"))
    monkeypatch.setenv("MEMGATE_DATA", str(tmp_path))
    with pytest.raises(DataError, match="md5"):
        data_mod.find_data(DataConfig(dataset="cifar100"))
    assert not (tmp_path / "cifar-100-python.tar.gz").exists()


def test_memgate_data_in_env_dir_is_found(tmp_path, arrays, monkeypatch):
    from memgate.data import find_data

    write_zip(tmp_path / "cifar10.zip", image_tree_files(*arrays))
    monkeypatch.setenv("MEMGATE_DATA", str(tmp_path))
    assert find_data(DataConfig()) == tmp_path / "cifar10.zip"
    assert find_data(DataConfig(path=str(tmp_path / "x.npz"))) == tmp_path / "x.npz"
