import io
import time

import numpy as np
import torch
from datafactory import (
    CLASSES,
    image_tree_files,
    png,
    python_version_files,
    write_tar,
    write_tree,
    write_zip,
)
from PIL import Image

from memgate.cli import main
from memgate.config import DataConfig
from memgate.data import load_dataset, make_split
from memgate.data.loader import DeviceData, epoch_plan
from memgate.data.stats import RELEASED_NORM


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


def test_classes_txt_fixes_label_order(tmp_path, arrays):
    names = list(reversed(CLASSES))  # not sorted: only classes.txt can give this order
    ds = load_dataset(write_zip(tmp_path / "r.zip", image_tree_files(*arrays, names=names)))
    assert ds.classes == tuple(names)
    assert np.array_equal(ds.y_train, arrays[1])


def test_bad_inputs_exit_2_with_one_line(tmp_path, arrays, capsys):
    for what, (path, needle) in _bad_inputs(tmp_path, arrays).items():
        assert main(["data", "info", str(path)]) == 2, what
        err = capsys.readouterr().err.strip()
        assert err.startswith("memgate: error: data: "), (what, err)
        assert "\n" not in err, what
        assert needle in err, (what, err)


def test_shared_cifar10_counts_and_published_means(shared_cifar10):
    ds = load_dataset(shared_cifar10)
    assert len(ds.y_train) == 50_000 and len(ds.y_test) == 10_000
    assert np.bincount(ds.y_train).tolist() == [5000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    from memgate.data.stats import channel_stats

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


def test_images_of_other_sizes_are_refused_or_brought_to_32x32(tmp_path, capsys):
    """data.resize: 'none' refuses a 40x64 RGBA image naming the fix; 'resize' squeezes it; 'crop' keeps
    its centre. The mode is part of the cache key, and a training run records it in its config."""
    from PIL import Image

    from memgate.data import load_dataset
    from memgate.data.images import _to_32

    # 64 wide, 40 high: left 12 columns red, centre 40 green, right 12 blue; alpha everywhere
    img = np.zeros((40, 64, 4), np.uint8)
    img[:, :12, 0], img[:, 12:52, 1], img[:, 52:, 2], img[..., 3] = 255, 255, 255, 255
    blob = io.BytesIO()
    Image.fromarray(img, "RGBA").save(blob, format="PNG")
    files = {"d/classes.txt": b"a\nb\n"}
    for split in ("train", "test"):
        for c in ("a", "b"):
            for i in range(2):
                files[f"d/{split}/{c}/{i}.png"] = blob.getvalue()
    data = write_zip(tmp_path / "big.zip", files)
    assert main(["data", "info", str(data)]) == 2
    err = capsys.readouterr().err
    assert "is 64x40 RGBA, expected 32x32 RGB; set data.resize=resize (squeeze) or data.resize=crop" in err
    crop = load_dataset(data, resize="crop")
    squeezed = load_dataset(data, resize="resize")
    assert crop.cache != squeezed.cache and crop.x_train.shape == squeezed.x_train.shape == (4, 32, 32, 3)
    centre = crop.x_train[0]
    assert (centre[:, 4:28, 1] == 255).all() and (centre[:, 4:28, [0, 2]] == 0).all()  # only green in the middle
    assert not np.array_equal(crop.x_train, squeezed.x_train)
    left = squeezed.x_train[0][:, :4]
    assert (left[..., 0] > 200).all()  # the squeezed image keeps its red left band (12/64 of the width)
    assert np.array_equal(squeezed.x_train[0], np.asarray(_to_32(Image.fromarray(img, "RGBA"), "resize")))
    assert main(["data", "info", str(data), "--resize", "crop"]) == 0
    assert "image shape (32, 32, 3)" in capsys.readouterr().out
