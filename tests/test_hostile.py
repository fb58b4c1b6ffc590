"""Hostile input: crafted, corrupt and oversized data, configs, grids, checkpoints and run folders.

Every case must end with exit status 2, exactly one line on stderr that names the problem, no
traceback, no code run from the data, and nothing that existed before changed or deleted.
"""

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from datafactory import CLASSES, image_tree_files, python_version_files, write_tar, write_tree, write_zip
from runfactory import tiny

from memgate.cli import main
from memgate.errors import StorageError
from memgate.train import checkpoint as ckpt_io
from memgate.train.run import train as run_training


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (what must not change)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def fails_cleanly(capsys, argv, needle, root=None):
    """Run the CLI; assert status 2, one stderr line containing ``needle``, and ``root`` untouched."""
    before = snapshot(root) if root else None
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, (argv, err)
    assert len(err.splitlines()) == 1 and err.startswith("memgate: error: "), err
    assert "Traceback" not in err
    assert needle in err, (needle, err)
    if root:
        assert snapshot(root) == before
    return err


# ----------------------------------------------------------------------------- data


class Payload:
    """A pickle that, when loaded with plain pickle, writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _python_tree_with(tmp_path, arrays, name, blob):
    files = python_version_files(*arrays)
    files[f"cifar-10-batches-py/{name}"] = blob
    return files


@pytest.mark.parametrize("member", ["data_batch_1", "test_batch", "batches.meta"])
@pytest.mark.parametrize("container", ["folder", "tar"])
def test_pickle_payload_in_cifar_batches_never_runs(tmp_path, arrays, capsys, member, container):
    marker = tmp_path / "PWNED"
    files = _python_tree_with(tmp_path, arrays, member, pickle.dumps({b"data": Payload(marker)}))
    if container == "folder":
        path = write_tree(tmp_path / "src", files) / "cifar-10-batches-py"
    else:
        path = write_tar(tmp_path / "cifar-10-python.tar.gz", files)
    train = ["train", "-c", _cfg(tmp_path), f"data.path={path}", f"out={tmp_path / 'run'}", "device=cpu"]
    for argv in (["data", "info", path], ["data", "prepare", path], train):
        fails_cleanly(capsys, argv, "refused global posix.system")
        assert not marker.exists()


def _cfg(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[model]\ndepth = 8\n")
    return p


@pytest.mark.parametrize(
    "blob,needle",
    [
        (pickle.dumps({b"foo": 1}), "no (N, 3072) pixel array"),
        (pickle.dumps([1, 2, 3]), "holds a list, not a CIFAR batch dict"),
        (pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": ["a", "b", "c"]}), "integer labels"),
        (pickle.dumps({b"data": np.zeros((3, 3072), np.float32), b"labels": [1, 2, 3]}), "no (N, 3072)"),
        (b"\x80\x04not a pickle", "cannot read data_batch_1"),
    ],
)
def test_python_batch_with_the_wrong_content(tmp_path, arrays, capsys, blob, needle):
    path = write_tree(tmp_path / "src", _python_tree_with(tmp_path, arrays, "data_batch_1", blob))
    fails_cleanly(capsys, ["data", "info", path / "cifar-10-batches-py"], needle, root=path)


def _npz_bytes(arrays, compressed=False):
    buf = io.BytesIO()
    x_train, y_train, x_test, y_test = arrays
    (np.savez_compressed if compressed else np.savez)(
        buf, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
    )
    return buf.getvalue()


def test_npz_with_corrupt_deflate_data(tmp_path, arrays, capsys):
    raw = bytearray(_npz_bytes(arrays, compressed=True))
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        info = zf.getinfo("x_train.npy")
    start = info.header_offset + 30 + len(info.filename) + 200  # inside the deflate stream
    raw[start : start + 64] = bytes(64)
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    fails_cleanly(capsys, ["data", "info", tmp_path / "bad.npz"], "not a readable .npz", root=tmp_path)


def test_npz_header_claiming_1e11_images_is_refused_before_allocating(tmp_path, arrays, capsys):
    x_train, y_train, x_test, y_test = arrays
    header = {"descr": "|u1", "fortran_order": False, "shape": (100_000_000_000, 32, 32, 3)}
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    npy.write(x_train.tobytes())
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        zf.writestr("x_train.npy", npy.getvalue())
        for k, v in (("y_train", y_train), ("x_test", x_test), ("y_test", y_test)):
            b = io.BytesIO()
            np.save(b, v)
            zf.writestr(f"{k}.npy", b.getvalue())
    fails_cleanly(capsys, ["data", "info", tmp_path / "huge.npz"], "claims shape (100000000000, 32, 32, 3)")


def _png_header_only(width, height):
    """A PNG whose header says width x height RGB, with a tiny (invalid) image body."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_png_is_refused_from_its_header(tmp_path, arrays, capsys):
    tree = image_tree_files(*arrays)
    tree["cifar10/train/cat/00009.png"] = _png_header_only(15000, 15000)
    path = write_zip(tmp_path / "bomb.zip", tree)
    fails_cleanly(capsys, ["data", "info", path], "cifar10/train/cat/00009.png")


def test_classes_txt_that_is_not_utf8(tmp_path, arrays, capsys):
    tree = image_tree_files(*arrays)
    tree["cifar10/classes.txt"] = "\n".join(CLASSES).encode("utf-16")
    fails_cleanly(capsys, ["data", "info", write_zip(tmp_path / "c.zip", tree)], "classes.txt")


def test_npz_label_10_without_classes_is_out_of_range(tmp_path, arrays, capsys):
    x_train, y_train, x_test, y_test = arrays
    y = y_train.copy()
    y[0] = 10
    np.savez(tmp_path / "l.npz", x_train=x_train, y_train=y, x_test=x_test, y_test=y_test)
    fails_cleanly(capsys, ["data", "info", tmp_path / "l.npz"], "label 10 is out of range for 10 classes")


def test_damaged_cache_is_detected_and_rebuilt(tmp_path, arrays, capsys, monkeypatch):
    from memgate.data import load_dataset

    monkeypatch.setenv("MEMGATE_CACHE", str(tmp_path / "cache"))
    path = write_zip(tmp_path / "d.zip", image_tree_files(*arrays))
    first = load_dataset(path)
    npy = Path(first.cache) / "x_train.npy"
    npy.write_bytes(npy.read_bytes()[:-100])
    second = load_dataset(path)
    assert "damaged dataset cache" in capsys.readouterr().err
    assert np.array_equal(second.x_train, arrays[0])
    assert np.array_equal(load_dataset(path).x_train, arrays[0])
    assert "damaged" not in capsys.readouterr().err  # rebuilt, so the third load is clean


def test_orphaned_temporary_cache_folders_are_removed(tmp_path, arrays, monkeypatch):
    from memgate.data import load_dataset

    monkeypatch.setenv("MEMGATE_CACHE", str(tmp_path / "cache"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / "cache" / f"d.zip-0123.tmp-{dead.stdout.strip()}"
    (orphan / "x").mkdir(parents=True)
    load_dataset(write_zip(tmp_path / "d.zip", image_tree_files(*arrays)))
    assert not orphan.exists()


def test_unwritable_cache_loads_uncached_with_one_warning(tmp_path, arrays, capsys, monkeypatch):
    (tmp_path / "file").write_text("a regular file")
    monkeypatch.setenv("MEMGATE_CACHE", str(tmp_path / "file" / "cache"))
    capsys.readouterr()
    assert main(["data", "info", str(write_zip(tmp_path / "d.zip", image_tree_files(*arrays)))]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the dataset cache" in err[0]


# ----------------------------------------------------------------------------- configs and grids


@pytest.mark.parametrize(
    "override,needle",
    [
        ("seed=-1", "seed=-1 must be a seed"),
        (f"seed={2**70}", "must be a seed between 0 and"),
        ("data.split_seed=-3", "data.split_seed=-3"),
        (f"data.noise_seed={2**40}", "data.noise_seed"),
    ],
)
def test_bad_seeds(capsys, override, needle):
    fails_cleanly(capsys, ["info", "-c", "configs/quick.toml", override], needle)


def test_config_file_that_is_not_utf8(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_bytes("[model]\ndepth = 20 # caf\xe9\n".encode("latin-1"))
    fails_cleanly(capsys, ["info", "-c", bad], "not UTF-8")


@pytest.mark.parametrize(
    "text,needle",
    [
        ('config = "c.toml"\nseeds = 5\n[[variant]]\nname = "a"\n', "seeds"),
        ('config = "c.toml"\nvariant = "abc"\n', "[[variant]] tables"),
        ('config = "c.toml"\nname = 5\n[[variant]]\nname = "a"\n', "name in"),
        ('config = "c.toml"\n[[variant]]\nname = ".."\n', "plain folder name"),
        (
            'config = "c.toml"\n[[variant]]\nname = "a"\ninit_from = "b"\n[[variant]]\nname = "b"\ninit_from = "a"\n',
            "a -> b -> a",
        ),
    ],
)
def test_bad_grids(tmp_path, capsys, text, needle):
    (tmp_path / "c.toml").write_text("")
    (tmp_path / "g.toml").write_text(text)
    fails_cleanly(capsys, ["sweep", tmp_path / "g.toml", "--dry-run"], needle)


def test_runs_folder_under_a_regular_file(tmp_path, capsys):
    (tmp_path / "c.toml").write_text("")
    (tmp_path / "g.toml").write_text('config = "c.toml"\n[[variant]]\nname = "a"\n')
    (tmp_path / "file").write_text("x")
    fails_cleanly(capsys, ["sweep", tmp_path / "g.toml", "--runs", tmp_path / "file" / "runs"], "cannot create")


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def finished(npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    run_training(tiny(npz, out, "train.epochs=1"))
    return out


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("config", 5, "config or model entry is not a mapping"),
        ("model", 5, "config or model entry is not a mapping"),
        ("model", {"stem.weight": 5}, "other than tensors"),
    ],
)
def test_crafted_checkpoint_fields_in_eval(finished, tmp_path, capsys, field, value, needle):
    c = ckpt_io.load(finished)
    c[field] = value
    torch.save(c, tmp_path / "bad.pt")
    fails_cleanly(capsys, ["eval", tmp_path / "bad.pt"], needle, root=tmp_path)


@pytest.mark.parametrize(
    "field,value",
    [("rng", {"torch": 5}), ("model_opt", {"state": 5}), ("epoch", -5), ("metrics", 3), ("epoch", "one")],
)
def test_crafted_checkpoint_fields_on_resume(npz, finished, tmp_path, capsys, field, value):
    run = tmp_path / "run"
    run.mkdir()
    cfg = tiny(npz, run, "train.epochs=1")
    (tmp_path / "c.toml").write_text(cfg.to_toml())
    (run / "config.toml").write_text(cfg.to_toml())
    c = ckpt_io.load(finished)
    c[field] = value
    torch.save(c, run / "checkpoint.pt")
    fails_cleanly(capsys, ["train", "-c", tmp_path / "c.toml"], "checkpoint: ", root=run)


# ----------------------------------------------------------------------------- run folders


def test_out_dir_under_a_regular_file(npz, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "c.toml").write_text(tiny(npz, tmp_path / "file" / "run").to_toml())
    fails_cleanly(capsys, ["train", "-c", tmp_path / "c.toml"], "cannot create the run folder", root=tmp_path)


def test_full_disk_is_one_line_and_keeps_the_last_checkpoint(npz, finished, tmp_path, capsys, monkeypatch):
    import errno

    import memgate.atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(memgate.atomic.os, "fsync", full)
    (tmp_path / "fresh.toml").write_text(tiny(npz, tmp_path / "fresh").to_toml())
    err = fails_cleanly(capsys, ["train", "-c", tmp_path / "fresh.toml"], "No space left on device")
    assert "free disk space" in err
    run = tmp_path / "run"  # a run without its summary: resuming must rewrite its files, and cannot
    run.mkdir()
    for name in ("checkpoint.pt", "metrics.jsonl", "gates.npz", "signals.npz"):
        (run / name).write_bytes((finished / name).read_bytes())
    (run / "config.toml").write_text(tiny(npz, run, "train.epochs=1").to_toml())
    (tmp_path / "c.toml").write_text(tiny(npz, run, "train.epochs=1").to_toml())
    fails_cleanly(capsys, ["train", "-c", tmp_path / "c.toml"], "No space left on device", root=run)
    for folder in (run, tmp_path / "fresh"):
        assert not [p for p in folder.iterdir() if ".tmp-" in p.name or p.name == ".lock"]


def test_run_files_without_config_toml_are_another_run(npz, finished, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pt", "gates.npz"):
        (run / name).write_bytes((finished / name).read_bytes())
    (tmp_path / "c.toml").write_text(tiny(npz, run).to_toml())
    fails_cleanly(capsys, ["train", "-c", tmp_path / "c.toml"], "another config", root=run)
    assert main(["train", "-c", str(tmp_path / "c.toml"), "--force"]) == 0
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2


def test_force_over_a_run_whose_tb_has_subfolders(npz, tmp_path):
    run = tmp_path / "run"
    run_training(tiny(npz, run, "train.epochs=1"))
    (run / "tb" / "sub").mkdir()
    (run / "tb" / "sub" / "events").write_text("x")
    s = run_training(tiny(npz, run, "train.epochs=1", "train.lr=0.05"), force=True)
    assert s["epochs"] == 1 and not (run / "tb" / "sub").exists()


def test_force_keeps_the_old_run_when_the_new_one_cannot_start(npz, tmp_path, capsys):
    run = tmp_path / "run"
    run_training(tiny(npz, run, "train.epochs=1"))
    (tmp_path / "c.toml").write_text(tiny(npz, run, "train.epochs=1", f"data.path={tmp_path / 'nope.npz'}").to_toml())
    fails_cleanly(capsys, ["train", "-c", tmp_path / "c.toml", "--force"], "does not exist", root=run)


def test_live_lock_refuses_and_stale_lock_is_taken_over(npz, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "c.toml").write_text(tiny(npz, run, "train.epochs=1").to_toml())
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(str(holder.pid))
        fails_cleanly(capsys, ["train", "-c", tmp_path / "c.toml"], f"in use by memgate process {holder.pid}", root=run)
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", "-c", str(tmp_path / "c.toml")]) == 0  # the holder is dead: its lock is stale
    assert not (run / ".lock").exists()


def test_corrupt_summary_grid_and_gates_files(npz, finished, tmp_path, capsys):
    grid = tmp_path / "grid"
    (grid / "v" / "seed0").mkdir(parents=True)
    (grid / "v" / "seed0" / "summary.json").write_text("{not json")
    fails_cleanly(capsys, ["report", grid], "summary.json is damaged", root=grid)
    (grid / "grid.json").write_text('{"name": "g", "variants": 5}')
    fails_cleanly(capsys, ["report", grid], "grid.json: variants must be a list", root=grid)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pt", "summary.json"):
        (run / name).write_bytes((finished / name).read_bytes())
    (run / "config.toml").write_text(tiny(npz, run, "train.epochs=1").to_toml())
    (run / "gates.npz").write_bytes(b"PK\x03\x04 not a zip")
    fails_cleanly(capsys, ["analyze", run], "gates.npz is damaged", root=run)
    # train on a run whose summary.json is damaged: rebuilt from the checkpoint and its final npz
    # files, nothing retrained; with those damaged too, the histories are lost: a one-line error.
    (run / "summary.json").write_text("{")
    (tmp_path / "c.toml").write_text(tiny(npz, run, "train.epochs=1").to_toml())
    fails_cleanly(capsys, ["train", "-c", tmp_path / "c.toml"], "lost its per-sample histories", root=run)
    for name in ("gates.npz", "signals.npz"):
        (run / name).write_bytes((finished / name).read_bytes())
    assert main(["train", "-c", str(tmp_path / "c.toml")]) == 0
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1
    assert ckpt_io.load(run)["epoch"] == 1


def test_non_finite_evaluation_is_not_a_good_checkpoint(npz, tmp_path, capsys, monkeypatch):
    """Training stays finite (batch statistics) while evaluation does not: a BatchNorm whose running
    variance went negative gives NaN only in eval mode."""
    import memgate.train.loop as training

    real_step = training.train_step

    def step_then_break_bn(model, *a, **kw):
        result = real_step(model, *a, **kw)
        model.stem_bn.running_var.fill_(-1.0)
        return result

    monkeypatch.setattr(training, "train_step", step_then_break_bn)
    run = tmp_path / "run"
    (tmp_path / "c.toml").write_text(tiny(npz, run, "train.batch_size=448").to_toml())
    err = fails_cleanly(capsys, ["train", "-c", tmp_path / "c.toml"], "non-finite")
    assert "last good checkpoint (none yet)" in err
    assert not (run / "checkpoint.pt").exists()
    for line in (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []:
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))


def test_eval_on_a_small_other_dataset_needs_no_validation_split(npz, finished, tmp_path, capsys):
    x = np.zeros((20, 32, 32, 3), np.uint8)
    y = np.arange(20) % 10
    np.savez(tmp_path / "small.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    assert main(["eval", str(finished), "--data", str(tmp_path / "small.npz")]) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_decoder_worker_whose_parent_died_before_it_started_exits_at_once():
    """The race of PR_SET_PDEATHSIG: a parent killed between the fork and the worker's prctl sends no
    signal. The worker initialiser then sees another parent pid and exits instead of decoding."""
    code = "import os; from memgate.data.images import _die_with_parent as d; d({}); print('decoding')"
    gone = subprocess.run([sys.executable, "-c", code.format("os.getppid() + 10**7")], capture_output=True, text=True)
    assert gone.returncode == 1 and "decoding" not in gone.stdout
    alive = subprocess.run([sys.executable, "-c", code.format("os.getppid()")], capture_output=True, text=True)
    assert alive.returncode == 0 and alive.stdout.strip() == "decoding"


@pytest.mark.slow
def test_kill_9_of_data_prepare_leaves_no_decoder_processes(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6000, 32, 32, 3), dtype=np.uint8)
    y = np.arange(6000) % 10
    files = image_tree_files(x[:5000], y[:5000], x[5000:], y[5000:])  # > 2,500 images: decoded by worker processes
    path = write_zip(tmp_path / "big.zip", files)
    env = {**os.environ, "MEMGATE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "memgate", "data", "prepare", str(path)], env=env)
    children: set[int] = set()
    for _ in range(600):  # wait until the decoder workers exist
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True).stdout
        children = {int(p) for p in out.split()}
        if len(children) >= 2:
            break
        time.sleep(0.05)
    assert children, "no decoder workers started"
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in children):
        time.sleep(0.1)
    assert not any(_alive(p) for p in children)
    subprocess.run(
        [sys.executable, "-m", "memgate", "data", "info", str(path)], env=env, check=True, capture_output=True
    )
    assert not list((tmp_path / "cache").glob("*.tmp-*"))  # and no temporary cache folder is left behind


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_one_line_usage_errors_and_range_checked_flags(capsys):
    cases = [
        (["trian"], "invalid choice"),
        (["tradeoff", "run", "--max-drop", "nan"], "--max-drop: nan must be a finite number"),
        (["tradeoff", "run", "--max-drop", "-1"], "--max-drop: -1 must be a finite number"),
        (["tradeoff", "run", "--repeats", "0"], "--repeats: 0 must be at least 1"),
        (["sweep", "g.toml", "--jobs", "0"], "--jobs: 0 must be at least 1"),
        (["sweep", "g.toml", "--seeds", "0,-1"], "--seeds: '0,-1': -1 must be at least 0; give comma-separated"),
        (["scores", "run", "--proxies", "--snapshots", "10,"], "--snapshots: '10,': '' is not an integer"),
        (["analyze", "run", "--suspects", "-3"], "--suspects: -3 must be at least 0"),
        (["holdout", "plan", "-c", "c.toml", "-o", "x", "--ratio", "0"], "--ratio: 0 must be a finite number"),
        (["eval"], "the following arguments are required: run"),
    ]
    for argv, needle in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("memgate: error: ") and needle in err, (argv, err)


def test_version_and_usage_without_a_command(capsys):
    """`memgate --version` prints the version; `memgate` alone lists the commands once (exit 2); a
    subcommand's usage error names the subcommand once, not "memgate: error: memgate ..."."""
    from memgate import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"memgate {__version__}"
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("usage: memgate") == 1 and "train " in err and "sweep " in err and "--version" in err
    assert main(["train"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "memgate: error: train: the following arguments are required: -c/--config (see memgate train --help)"


def test_an_imported_networks_checkpoint_file_is_a_baseline(tmp_path, npz):
    """`tradeoff --baseline runs/resnet20/checkpoint.pt` names the imported network's file: it is drawn
    as that network, not refused as "not a finished run"."""
    from test_pretrained import akamaster_file

    from memgate.analysis.tradeoff import _reference_point

    akamaster_file(tmp_path / "r.th")
    argv = ["import", str(tmp_path / "r.th"), "-o", str(tmp_path / "pub"), f"data.path={npz}", "data.val_size=0"]
    assert main(argv) == 0
    by_file, by_folder = (_reference_point(p) for p in (tmp_path / "pub" / "checkpoint.pt", tmp_path / "pub"))
    assert by_file["label"] == by_folder["label"] == "ResNet-20 (public weights)"
    assert by_file["test_acc"] == by_folder["test_acc"] and by_file["macs"] == by_folder["macs"]


def test_a_killed_writes_temporary_file_is_removed_by_the_next_write(tmp_path):
    from memgate.atomic import write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".detection.json.tmp-{int(dead.stdout)}"
    stale.write_text("half")
    mine = tmp_path / f".detection.json.tmp-{os.getpid()}-other"  # not a pid suffix: kept
    mine.write_text("x")
    write_text(tmp_path / "detection.json", "{}")
    assert not stale.exists() and mine.exists() and (tmp_path / "detection.json").read_text() == "{}"


def test_outputs_belong_to_their_run(npz, finished, tmp_path, capsys):
    """analyze -o into another run's folder, or into a folder holding another run's analysis, is
    refused (nothing written) unless --force; a bad --scores file fails before any output."""
    other = tmp_path / "other"
    other.mkdir()
    for name in ("config.toml", "checkpoint.pt", "gates.npz", "signals.npz", "summary.json"):
        (other / name).write_bytes((finished / name).read_bytes())
    fails_cleanly(capsys, ["analyze", finished, "-o", other], "is the folder of another run", root=other)
    out = tmp_path / "out"
    assert main(["analyze", str(finished), "-o", str(out)]) == 0
    fails_cleanly(capsys, ["analyze", other, "-o", out], "holds the analyze results of", root=out)
    assert main(["analyze", str(other), "-o", str(out), "--force"]) == 0
    assert main(["analyze", str(other), "-o", str(out)]) == 0  # now it is other's folder
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    fails_cleanly(capsys, ["analyze", other, "-o", out, "--scores", tmp_path / "bad.npz"], "cannot read", root=out)
    fails_cleanly(capsys, ["analyze", other, "-o", out, "--suspects", "5", "--by", "nope"], "--by nope", root=out)


def test_an_edited_exclude_file_is_named_as_changed(npz, tmp_path, capsys):
    excl = tmp_path / "drop.txt"
    excl.write_text("")
    cfg = tiny(npz, tmp_path / "run", "train.epochs=1", f"data.exclude={excl}")
    (tmp_path / "c.toml").write_text(cfg.to_toml())
    assert main(["train", "-c", str(tmp_path / "c.toml")]) == 0
    with np.load(tmp_path / "run" / "signals.npz") as z:
        split_first = z["indices"][:3]
    excl.write_text("\n".join(str(i) for i in split_first))  # the finished run dropped none of these
    err = fails_cleanly(
        capsys, ["train", "-c", tmp_path / "c.toml"], "has changed since the run", root=tmp_path / "run"
    )
    assert str(excl) in err
    assert main(["train", "-c", str(tmp_path / "c.toml"), "--force"]) == 0
    with np.load(tmp_path / "run" / "signals.npz") as z:
        assert not np.isin(split_first, z["indices"]).any()


def _gates_with(finished, **changes):
    with np.load(finished / "gates.npz") as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    return arrays


def _huge_npz(path):
    """An npz whose g_b3 header claims 10^13 float16 values in a few bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f2", "fortran_order": False, "shape": (10**13,)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("g_b3.npy", b"\x93NUMPY" + header.getvalue()[6:] + b"\0" * 16)


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"stages": None}, "stages must list the gated stages"),
        ({"g_b3": np.zeros(448, np.float16)}, "g_b3 has shape (448,)"),
        ({"g_b3": np.full((1, 448), np.nan, np.float16)}, "g_b3 has no finite value"),
        ({"g_b3": np.full((1, 448), 3.0, np.float16)}, "outside [0, 1]"),
        ({"labels": -np.ones(448, np.int64)}, "labels must hold integers >= 0"),
        ({"indices": np.zeros(448, np.int64)}, "indices repeats a dataset index"),
        ({"noisy": None}, "noisy is missing"),
        ({"noisy": np.zeros(3, bool)}, "noisy has shape (3,)"),
    ],
)
def test_damaged_gates_npz_is_one_line(finished, tmp_path, capsys, change, needle):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.toml", "checkpoint.pt", "signals.npz", "summary.json"):
        (run / name).write_bytes((finished / name).read_bytes())
    np.savez(run / "gates.npz", **_gates_with(finished, **change))
    fails_cleanly(capsys, ["analyze", run, "-o", tmp_path / "out"], needle)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_crafted_or_linked_run_files_are_refused(finished, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.toml", "checkpoint.pt", "signals.npz", "summary.json"):
        (run / name).write_bytes((finished / name).read_bytes())
    _huge_npz(run / "gates.npz")
    fails_cleanly(capsys, ["analyze", run, "-o", tmp_path / "o1"], "claims shape (10000000000000,)")
    (run / "gates.npz").unlink()
    (run / "gates.npz").symlink_to(finished / "gates.npz")
    fails_cleanly(capsys, ["analyze", run, "-o", tmp_path / "o2"], "is a symbolic link")
    (run / "gates.npz").unlink()
    (run / "gates.npz").symlink_to(run / "gates.npz")  # a loop
    fails_cleanly(capsys, ["analyze", run, "-o", tmp_path / "o3"], "is a symbolic link")


def test_import_refuses_folders_sparse_and_absurd_files_before_building(tmp_path, capsys, monkeypatch):
    import time as _time

    from test_pretrained import akamaster_file

    theirs, _ = akamaster_file(tmp_path / "r.th")
    fails_cleanly(capsys, ["import", tmp_path, "-o", tmp_path / "o"], "is a folder")
    sparse = {k: (v.to_sparse() if k == "linear.weight" else v) for k, v in theirs.items()}
    torch.save({"state_dict": sparse}, tmp_path / "sparse.th")
    fails_cleanly(capsys, ["import", tmp_path / "sparse.th", "-o", tmp_path / "o"], "sparse tensors")
    deep = dict(theirs)  # 4,000 units per stage of 1-element tensors: refused without building a ResNet-24002
    for s in (1, 2, 3):
        for u in range(4000):
            deep[f"layer{s}.{u}.conv1.weight"] = torch.zeros(1)
    torch.save({"state_dict": deep}, tmp_path / "deep.th")
    t = _time.perf_counter()
    fails_cleanly(capsys, ["import", tmp_path / "deep.th", "-o", tmp_path / "o"], "claims a ResNet-24002")
    assert _time.perf_counter() - t < 10
    monkeypatch.chdir(tmp_path)
    assert main(["import", str(tmp_path / "r.th"), "-o", "123"]) == 0  # a numeric folder name is a name, not TOML
    assert (tmp_path / "123" / "config.toml").exists()


def test_excluding_every_sample_and_a_nonsense_paper_entry(npz, tmp_path, capsys):
    from memgate.config import DataConfig
    from memgate.data import load_dataset, make_split

    split = make_split(load_dataset(npz), DataConfig(path=str(npz), val_size=64))
    np.save(tmp_path / "all.npy", split.train_idx)
    (tmp_path / "c.toml").write_text(tiny(npz, tmp_path / "run", f"data.exclude={tmp_path / 'all.npy'}").to_toml())
    fails_cleanly(capsys, ["train", "-c", tmp_path / "c.toml"], "drops every training sample")
    (tmp_path / "g.toml").write_text(f'config = "{tmp_path / "c.toml"}"\n[[variant]]\nname = "a"\npaper = "abc"\n')
    fails_cleanly(capsys, ["sweep", tmp_path / "g.toml", "--dry-run"], "paper must be [mean, std]")


# ----------------------------------------------------------------------------- run files' schema


def _grid_of(finished, root):
    """A one-run grid folder (grid.json + v/seed0) holding a copy of the finished run."""
    run = root / "v" / "seed0"
    run.mkdir(parents=True)
    for name in ("config.toml", "checkpoint.pt", "gates.npz", "signals.npz", "summary.json", "metrics.jsonl"):
        (run / name).write_bytes((finished / name).read_bytes())
    (root / "grid.json").write_text(json.dumps({"name": "g", "seeds": [0], "variants": [{"name": "v"}]}))
    return run


def _edit_json(path, **changes):
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize(
    "damage,needle",
    [
        (lambda r: r.joinpath("summary.json").write_text("{}"), "summary.json: epochs is missing"),
        (lambda r: r.joinpath("summary.json").write_text("[1]"), "the content must be a mapping, not list"),
        (lambda r: _edit_json(r / "summary.json", final_test_acc="high"), "final_test_acc must be a number"),
        (lambda r: _edit_json(r / "summary.json", final_test_acc=7), "final_test_acc is 7, outside [0, 1]"),
        (lambda r: _edit_json(r / "summary.json", macs=True), "macs must be an integer, not True"),
        (
            lambda r: r.joinpath("metrics.jsonl").write_bytes(r.joinpath("metrics.jsonl").read_bytes()[:-30]),
            "metrics.jsonl, line 1 is damaged (JSONDecodeError)",
        ),
        (lambda r: r.joinpath("metrics.jsonl").write_text("[]\n"), "line 1: the content must be a mapping"),
        (lambda r: r.joinpath("metrics.jsonl").write_bytes(b"\xe1\xff\n"), "cannot read"),
        (
            lambda r: r.joinpath("metrics.jsonl").write_text(
                '{"epoch": 1, "lr": 0.1, "train_loss": 1, "train_acc": "x", "epoch_time_s": 1}\n'
            ),
            "train_acc must be a number",
        ),
        (lambda r: r.joinpath("ood.json").write_text('{"ood": []}'), "ood.json: ood must be a mapping, not list"),
        (
            lambda r: r.joinpath("ood.json").write_text('{"ood": {"svhn": {"n": 5, "scores": {"g": {"auroc": "x"}}}}}'),
            "ood.svhn.scores.g.auroc must be a number",
        ),
        (lambda r: r.joinpath("tradeoff.json").write_text('{"points": []}'), "tradeoff.json: macs_full is missing"),
        (
            lambda r: (r.parent.parent / "grid.json").write_text('{"name": "g", "seeds": "x", "variants": []}'),
            "grid.json: seeds must be a list",
        ),
        (
            lambda r: (r.parent.parent / "grid.json").write_text(
                '{"name": "g", "seeds": [0], "variants": [{"name": "v", "paper": {"a": 1}}]}'
            ),
            "variants[0].paper must be a list",
        ),
    ],
)
def test_damaged_json_run_files_are_one_line_in_report(finished, tmp_path, capsys, damage, needle):
    """summary.json, metrics.jsonl, ood.json, tradeoff.json and grid.json are read through their
    schema: any damage is one line naming the file and the field, and report writes nothing."""
    run = _grid_of(finished, tmp_path / "grid")
    damage(run)
    fails_cleanly(capsys, ["report", tmp_path / "grid", "-o", tmp_path / "rep"], needle, root=tmp_path / "grid")
    assert not (tmp_path / "rep").exists() or not any((tmp_path / "rep").iterdir())


def test_a_run_with_a_damaged_summary_is_rebuilt_not_reported(npz, finished, tmp_path, capsys):
    run = _grid_of(finished, tmp_path / "grid")
    _edit_json(run / "summary.json", final_test_acc="high")
    fails_cleanly(capsys, ["analyze", run, "-o", tmp_path / "o"], "delete it and run `memgate train -c")
    (run / "summary.json").unlink()
    (tmp_path / "c.toml").write_text((run / "config.toml").read_text())
    assert main(["train", "-c", str(tmp_path / "c.toml"), f"out={run}"]) == 0
    assert json.loads((run / "summary.json").read_text()) == json.loads((finished / "summary.json").read_text()) | {
        "out": str(run),
        "train_time_s": json.loads((run / "summary.json").read_text())["train_time_s"],
    }


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda p, idx: np.save(open(p, "wb"), np.zeros(len(idx))), "is a plain .npy array, not an .npz"),
        (lambda p, idx: np.savez(p, indices=idx, scores=np.array(["a"] * len(idx))), "'scores' is <U1"),
        (lambda p, idx: np.savez(p, indices=idx, scores=np.zeros(len(idx), complex)), "'scores' is complex128"),
        (lambda p, idx: np.savez(p, indices=idx, scores=np.zeros((len(idx), 2))), "it must be 1-D real numbers"),
        (
            lambda p, idx: np.savez(p, indices=idx.astype(np.uint64) + np.uint64(2**63), scores=np.zeros(len(idx))),
            "not a dataset index",
        ),
        (lambda p, idx: np.savez(p, indices=idx, scores=np.full(len(idx), np.inf)), "holds a non-finite score"),
        (
            lambda p, idx: np.savez(p, indices=idx, scores=np.zeros(len(idx))),
            "scores of this run's samples are equal",
        ),
        (lambda p, idx: np.savez(p, indices=idx[:5], scores=np.arange(5.0)), "covers 5 of this run's"),
        (lambda p, idx: os.symlink("/dev/zero", p), "is not a regular file"),
        (lambda p, idx: _huge_npz(p), "claims shape (10000000000000,)"),
    ],
)
def test_bad_external_scores_files(finished, tmp_path, capsys, make, needle):
    with np.load(finished / "signals.npz") as z:
        idx = z["indices"]
    make(tmp_path / "s.npz", idx)
    fails_cleanly(capsys, ["analyze", finished, "-o", tmp_path / "o", "--scores", tmp_path / "s.npz"], needle)
    assert not (tmp_path / "o").exists()


def test_a_valid_float16_scores_file_is_read(finished, tmp_path, capsys):
    with np.load(finished / "signals.npz") as z:
        idx = z["indices"]
    np.savez(
        tmp_path / "s.npz", indices=idx[::-1].astype(np.uint32), scores=np.linspace(0, 1, len(idx), dtype=np.float16)
    )
    assert main(["analyze", str(finished), "-o", str(tmp_path / "o"), "--scores", str(tmp_path / "s.npz")]) == 0
    assert json.loads((tmp_path / "o" / "external_scores.json").read_text())["n"] == len(idx)


@pytest.mark.parametrize(
    "name,make,needle",
    [
        ("x.csv", lambda p: p.write_text("index,score\n5,0.1\n7\n"), "row 3 has 1 fields, its header 2"),
        ("x.csv", lambda p: os.symlink("/dev/zero", p), "is not a regular file"),
        ("x.npy", lambda p: np.save(p, np.array([2**64 - 1], np.uint64)), "lists 18446744073709551615"),
        ("x.txt", lambda p: p.write_text("99999999999999999999999\n"), "lists 99999999999999991611392"),
        ("x.npy", lambda p: np.savez(open(p, "wb"), a=np.zeros(3)), "is an .npz archive, not a .npy array"),
        ("x.txt", lambda p: p.write_text("[3, 9, 27]\n"), "has a header line ([3,9,27]) and no rows"),
    ],
)
def test_bad_exclude_files(npz, tmp_path, capsys, name, make, needle):
    make(tmp_path / name)
    (tmp_path / "c.toml").write_text(tiny(npz, tmp_path / "run", f"data.exclude={tmp_path / name}").to_toml())
    fails_cleanly(capsys, ["train", "-c", tmp_path / "c.toml"], needle)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_an_exclude_file_whose_labels_belong_to_other_samples_is_refused(npz, tmp_path, capsys):
    """suspects.csv carries each index's label; a file made for another dataset order disagrees."""
    from memgate.data import load_dataset, make_split

    cfg = tiny(npz, tmp_path / "run")
    split = make_split(load_dataset(npz), cfg.data)
    idx, lab = split.train_idx[:20], split.train_labels[:20]
    rows = "".join(f"{i},{(y + 1) % 10}\n" for i, y in zip(idx, lab))
    (tmp_path / "wrong.csv").write_text("index,label\n" + rows)
    (tmp_path / "c.toml").write_text(tiny(npz, tmp_path / "run", f"data.exclude={tmp_path / 'wrong.csv'}").to_toml())
    fails_cleanly(
        capsys, ["train", "-c", tmp_path / "c.toml"], "its label column disagrees with this run's labels on 100.0%"
    )
    (tmp_path / "right.csv").write_text("index,label\n" + "".join(f"{i},{y}\n" for i, y in zip(idx, lab)))
    right = tiny(npz, tmp_path / "run2", f"data.exclude={tmp_path / 'right.csv'}").data
    assert len(make_split(load_dataset(npz), right).train_idx) == len(split.train_idx) - 20


@pytest.mark.parametrize(
    "name,change,needle",
    [
        ("signals.npz", lambda a: {"correct": a["correct"] * 5}, "correct holds values other than 0 and 1"),
        (
            "signals.npz",
            lambda a: {"labels": a["labels"] + 10, "clean_labels": a["clean_labels"] + 10},
            "labels holds class",
        ),
        ("signals.npz", lambda a: {"probs_final": a["probs_final"][:, :3]}, "but the softmax has 3 classes"),
        ("signals.npz", lambda a: {"indices": a["indices"] + 1}, "indices differs between signals.npz and gates.npz"),
        ("gates.npz", lambda a: {"labels": (a["labels"] + 1) % 10}, "labels differs between signals.npz and gates.npz"),
    ],
)
def test_run_arrays_that_contradict_each_other(finished, tmp_path, capsys, name, change, needle):
    run = tmp_path / "run"
    run.mkdir()
    for f in ("config.toml", "checkpoint.pt", "gates.npz", "signals.npz", "summary.json"):
        (run / f).write_bytes((finished / f).read_bytes())
    with np.load(finished / name) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(change(arrays))
    np.savez(run / name, **arrays)
    fails_cleanly(capsys, ["analyze", run, "-o", tmp_path / "o"], needle, root=run)


def test_a_linked_history_file_is_refused(tmp_path):
    """A run in progress keeps its histories in history/*.npy; a link there is refused like any run file's."""
    from memgate.errors import RunError
    from memgate.train.history import read_rows

    real = tmp_path / "real.npy"
    np.save(real, np.zeros((3, 5), np.float16))
    assert read_rows(real, 2).shape == (2, 5)
    (tmp_path / "loss.npy").symlink_to(real)
    with pytest.raises(RunError, match="is a symbolic link"):
        read_rows(tmp_path / "loss.npy", 2)


def test_a_damaged_npz_of_a_finished_run_names_a_repair_that_works(finished, tmp_path, capsys):
    """A finished run's histories live only in its npz files: `memgate train` cannot rewrite them."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "signals.npz").write_bytes(b"PK\x03\x04 not a zip")
    err = fails_cleanly(capsys, ["analyze", run, "-o", tmp_path / "o"], "exist only in this file", root=run)
    assert "restore it from a copy, or retrain the run (memgate train --force)" in err
    assert "run `memgate train` on the run again" not in err


def test_a_folder_given_as_a_grid_or_config_is_named_as_a_folder(tmp_path, capsys):
    fails_cleanly(capsys, ["sweep", tmp_path, "--dry-run"], f"{tmp_path} is a folder, not a TOML file")
    fails_cleanly(capsys, ["train", "-c", tmp_path], f"{tmp_path} is a folder, not a TOML file")


def test_batch_sizes_error_gives_an_example_of_batch_sizes(finished, capsys):
    needle = "'0.5' is not an integer; give comma-separated integers, e.g. 1,2"
    fails_cleanly(capsys, ["tradeoff", finished, "--batch-sizes", "0.5"], needle)
    fails_cleanly(capsys, ["tradeoff", finished, "--batch-sizes", "1,0"], "0 must be at least 1")


def test_outputs_never_land_in_another_run_or_its_kept_results(finished, npz, tmp_path, capsys):
    """report -o into a run's folder, scores -o into another run's kept results (summary.json copied
    without checkpoint or config), report -o into another grid's report: refused, nothing changed.
    A run's own kept copy (summary.json and config.toml, as results/table1_r20 commits them) takes
    its scores; with a checkpoint beside them the folder is a run's, never a copy."""
    import shutil

    other = tmp_path / "other"
    run_training(tiny(npz, other, "train.epochs=1", "seed=1"))
    grid = tmp_path / "grid" / "gated" / "seed0"
    shutil.copytree(finished, grid)
    fails_cleanly(capsys, ["report", tmp_path / "grid", "-o", other], "is the folder of another run", root=other)
    kept = tmp_path / "kept"
    kept.mkdir()
    for name in ("summary.json", "metrics.jsonl"):
        shutil.copy(other / name, kept / name)
    fails_cleanly(capsys, ["scores", finished, "-o", kept], f"keeps the results of another run ({other})", root=kept)
    shutil.copy(other / "config.toml", kept / "config.toml")  # a study's committed copy of `other`
    fails_cleanly(capsys, ["scores", finished, "-o", kept], "is the folder of another run", root=kept)
    assert main(["scores", str(other), "-o", str(kept)]) == 0 and (kept / "train_scores.npz").exists()
    shutil.copy(other / "checkpoint.pt", kept / "checkpoint.pt")  # a checkpoint makes it a run: never its copy
    fails_cleanly(capsys, ["scores", other, "-o", kept], "is the folder of another run", root=kept)
    assert main(["report", str(tmp_path / "grid"), "-o", str(tmp_path / "rep")]) == 0
    shutil.copytree(finished, tmp_path / "grid2" / "gated" / "seed0")
    fails_cleanly(
        capsys,
        ["report", tmp_path / "grid2", "-o", tmp_path / "rep"],
        "holds the report results of",
        root=tmp_path / "rep",
    )


NEST = "[" * 600 + "]" * 600


@pytest.mark.parametrize(
    "where",
    ["config", "override", "grid", "summary", "grid.json", "outputs"],
)
def test_nesting_bombs_are_one_line_errors(finished, npz, tmp_path, capsys, where):
    """600 nested arrays in any file memgate reads (or an override) end in one line, not RecursionError."""
    import shutil

    if where == "config":
        (tmp_path / "c.toml").write_text(f"[model]\ngates = {NEST}\n")
        fails_cleanly(capsys, ["train", "-c", tmp_path / "c.toml"], "is not valid TOML")
    elif where == "override":
        cfg = tmp_path / "c.toml"
        cfg.write_text(tiny(npz, tmp_path / "run").to_toml())
        fails_cleanly(capsys, ["train", "-c", cfg, f"model.gates={NEST}"], "model.gates must be a list of integers")
    elif where == "grid":
        (tmp_path / "g.toml").write_text(f'config = "x.toml"\nseeds = {NEST}\n')
        fails_cleanly(capsys, ["sweep", tmp_path / "g.toml", "--dry-run"], "is not valid TOML")
    elif where == "summary":
        root = tmp_path / "grid"
        shutil.copytree(finished, root / "gated" / "seed0")
        (root / "gated" / "seed0" / "summary.json").write_text(f'{{"out": {NEST}}}')
        fails_cleanly(capsys, ["report", root], "summary.json", root=root)
    elif where == "grid.json":
        root = tmp_path / "grid"
        shutil.copytree(finished, root / "gated" / "seed0")
        (root / "grid.json").write_text(NEST)
        fails_cleanly(capsys, ["report", root], "grid.json", root=root)
    else:
        out = tmp_path / "o"
        out.mkdir()
        (out / ".memgate_outputs.json").write_text(NEST)
        assert main(["analyze", str(finished), "-o", str(out)]) == 0  # unreadable marks are ignored


def test_a_billion_laughs_checkpoint_fails_fast(finished, tmp_path, capsys):
    """A weights_only-loadable checkpoint whose config value is a list of 30 levels of shared lists (2**30
    leaves when expanded) is refused in well under a second, not after printing it."""
    import time

    import torch

    ckpt = torch.load(finished / "checkpoint.pt", weights_only=True)
    bomb: list = [0]
    for _ in range(30):
        bomb = [bomb, bomb]
    run = tmp_path / "run"
    run.mkdir()
    torch.save(
        {**ckpt, "config": {**ckpt["config"], "model": {**ckpt["config"]["model"], "gates": bomb}}},
        run / "checkpoint.pt",
    )
    t = time.perf_counter()
    fails_cleanly(capsys, ["eval", run], "model.gates must be a list of integers")
    torch.save({**ckpt, "epoch": bomb}, run / "checkpoint.pt")
    (run / "config.toml").write_text((finished / "config.toml").read_text().replace(str(finished), str(run)))
    fails_cleanly(capsys, ["train", "-c", run / "config.toml"], "is not a count")
    assert time.perf_counter() - t < 20


@pytest.mark.parametrize(
    "override,needle",
    [
        ("model.depth=600002", "model.depth=600002 is beyond any sensible run (at most 2000)"),
        ("model.num_classes=1000000000000", "model.num_classes=1e+12 is beyond any sensible run"),
        ("gate.hidden=[1000000000000]", "gate.hidden=1e+12 is beyond any sensible run"),
        ("train.epochs=1000000000000", "train.epochs=1e+12 is beyond any sensible run (at most 10000)"),
        ("train.lr=1e308", "train.lr=1e+308 is beyond any sensible run (at most 10)"),
        ("train.momentum=1.5", "train.momentum=1.5 must be below 1"),
    ],
)
def test_absurd_sizes_are_config_errors(npz, tmp_path, capsys, override, needle):
    (tmp_path / "c.toml").write_text(tiny(npz, tmp_path / "run").to_toml())
    fails_cleanly(capsys, ["train", "-c", tmp_path / "c.toml", override], needle)
    assert not (tmp_path / "run").exists()


def test_a_fifo_is_not_read_as_data(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.zip")
    fails_cleanly(capsys, ["data", "info", tmp_path / "pipe.zip"], "is neither a regular file nor a folder")


def test_a_full_disk_under_torch_save_is_a_storage_error(finished, tmp_path, monkeypatch, capsys):
    """torch's writer reports ENOSPC as a RuntimeError; import and train say 'free disk space' in one line
    and leave no temporary file behind."""
    from memgate.train import checkpoint as ckpt

    def full(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(StorageError, match="free disk space"):
        ckpt.save({"model": {}, "config": {}}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_class_name_with_dollars_draws(tmp_path):
    """matplotlib would parse "$\\undefinedcmd$" as TeX; memgate draws user text as given."""
    from memgate.analysis.figures import image_grid

    imgs = [np.zeros((32, 32, 3), np.uint8)] * 2
    image_grid(imgs, ["$\\undefinedcmd$", "a $b$"], [False, True], tmp_path / "g.png", "title $\\x$")
    assert (tmp_path / "g.png").stat().st_size > 1000


def test_image_grid_titles_never_cover_the_row_above(tmp_path, monkeypatch):
    """Two-line titles (label, g) sit between the rows: each title's box ends below the image above it
    (at 1.8 inches a row they covered its bottom edge in results/table1_r20's top_g.png)."""
    import io

    import matplotlib.pyplot as plt

    from memgate.analysis import figures

    drawn = {}

    def keep(png, write):  # the real save's layout, drawn into memory; the figure is still open here
        write(io.BytesIO())
        fig = plt.gcf()
        r = fig.canvas.get_renderer()
        drawn["boxes"] = [(ax.get_window_extent(r), ax.title.get_window_extent(r)) for ax in fig.axes]

    monkeypatch.setattr(figures, "write_atomic", keep)
    imgs = [np.zeros((32, 32, 3), np.uint8)] * 24
    figures.image_grid(imgs, [f"automobile\ng={i / 24:.2f}" for i in range(24)], [False] * 24, tmp_path / "g.png", "t")
    boxes = drawn["boxes"]
    for above, below in zip(boxes[:16], boxes[8:]):
        assert below[1].y1 < above[0].y0, (below[1], above[0])


def test_figure_2_log_ticks_are_numbers_not_raw_tex(finished, tmp_path, monkeypatch):
    """With TeX parsing off for users' text, matplotlib's log ticks would read "$\\mathdefault{10^{-2}}$"
    (so they did in results/table1_r20's first Figure 2): both log axes of Figure 2 say 0.01."""
    from memgate.analysis import gates

    drawn = {}

    def keep(fig, png, title=None):
        fig.canvas.draw()
        drawn["labels"] = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels() if t.get_text()]

    monkeypatch.setattr(gates, "save", keep)
    gates.plot_g_histograms(finished / "gates.npz", tmp_path / "fig2.png")
    labels = drawn["labels"]
    assert not any("$" in t for t in labels), labels
    assert labels.count("0.01") == 2 and labels.count("1") == 2, labels  # colour bar and histogram axis


def test_silently_wrong_inputs_are_refused(finished, npz, tmp_path, capsys):
    """An unfinished run's scores, signals.npz columns of other samples, one run counted as several
    seeds through links, and a baseline trained on other data: each refused in one line."""
    import shutil

    from datafactory import write_learnable_npz

    # an unfinished run: 1 of 3 epochs (its checkpoint says so)
    unfinished = tmp_path / "unfinished"
    cfg = tiny(npz, unfinished, "train.epochs=1")
    run_training(cfg)
    (unfinished / "config.toml").write_text(
        (unfinished / "config.toml").read_text().replace("epochs = 1", "epochs = 3")
    )
    ckpt = torch.load(unfinished / "checkpoint.pt", weights_only=True)
    ckpt["config"]["train"]["epochs"] = 3
    torch.save(ckpt, unfinished / "checkpoint.pt")
    (unfinished / "summary.json").unlink()
    fails_cleanly(capsys, ["scores", unfinished, "-o", tmp_path / "s1"], "is not finished (epoch 1 of 3)")
    # signals.npz whose indices were replaced by other (in-range) training indices: permuted
    moved = tmp_path / "moved"
    shutil.copytree(finished, moved)
    with np.load(moved / "signals.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["indices"] = np.roll(arrays["indices"], 1)
    np.savez(moved / "signals.npz", **arrays)
    fails_cleanly(capsys, ["scores", moved, "-o", tmp_path / "s2"], "describes other samples than the run's")
    # one run linked as three seeds
    root = tmp_path / "grid"
    shutil.copytree(finished, root / "gated" / "seed0")
    for s in (1, 2):
        (root / "gated" / f"seed{s}").symlink_to(root / "gated" / "seed0")
    fails_cleanly(capsys, ["report", root], "is a symbolic link", root=root)
    # a baseline trained on CIFAR-100-shaped data beside a CIFAR-10 gate
    c100 = write_learnable_npz(tmp_path / "c100.npz", n_train=400, n_test=100, classes=100)
    other = tmp_path / "c100_run"
    run_training(tiny(c100, other, "train.epochs=1", "model.gates=[]", "gate.hidden=[]", "model.num_classes=100"))
    o1 = tmp_path / "o1"
    run_training(tiny(npz, o1, "train.epochs=1", "gate.input=first_unit"))
    fails_cleanly(capsys, ["tradeoff", o1, "--baseline", other], "was trained on another dataset")


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda zf: zf.writestr("scores", b"\x00" * 64), "member 'scores' is not an .npy array"),
        (lambda zf: zf.writestr("empty.npy", _npy_header("|V0", (10**13,))), "has an empty dtype"),
        (  # five members of 256 MiB of zeros each, 1.25 GiB together, a few MB in the file
            lambda zf: [zf.writestr(f"z{i}.npy", _npy_header("<f8", (1 << 25,)) + bytes(1 << 28)) for i in range(5)],
            "bytes together, over the",
        ),
    ],
)
def test_crafted_npz_members_are_refused_before_allocation(finished, tmp_path, capsys, make, needle):
    import zipfile

    with np.load(finished / "signals.npz") as z:
        idx = z["indices"]
    path = tmp_path / "s.npz"
    np.savez(path, indices=idx, scores=np.linspace(0, 1, len(idx)))
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        make(zf)
    assert path.stat().st_size < 20 << 20  # the zeros compress to a few MB
    fails_cleanly(capsys, ["analyze", finished, "-o", tmp_path / "o", "--scores", path], needle)


def _npy_header(dtype: str, shape: tuple) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()
