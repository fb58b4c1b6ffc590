import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from datafactory import write_learnable_npz

import memgate.training as training
from memgate import checkpoint as ckpt_io
from memgate.cli import main
from memgate.config import load_config
from memgate.errors import CheckpointError, RunError
from memgate.models import build_model

TIMING_KEYS = ("epoch_time_s", "eval_time_s", "images_per_s")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_learnable_npz(tmp_path_factory.mktemp("data") / "toy.npz")


def tiny(npz, out, *overrides):
    return load_config(
        None,
        [
            "model.depth=14",
            "model.gates=[3]",
            "gate.hidden=[16]",
            f"data.path={npz}",
            "data.val_size=64",
            "train.epochs=2",
            "train.batch_size=32",
            "train.checkpoint_every_s=0",
            f"out={out}",
            "device=cpu",
            *overrides,
        ],
    )


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _weights(run):
    return ckpt_io.load(run)["model"]


def test_run_outputs_metrics_gates_checkpoint_summary(npz, tmp_path, capsys):
    cfg = tiny(npz, tmp_path / "run", "data.label_noise=0.25")
    summary = training.train(cfg)
    out = Path(cfg.out)
    for name in ("config.toml", "metrics.jsonl", "gates.npz", "checkpoint.pt", "summary.json", "g_hist.png"):
        assert (out / name).exists(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    rows = training.read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    required = {
        "epoch",
        "lr",
        "gate_lr",
        "train_loss",
        "train_acc",
        "gate_loss",
        "gate_acc",
        "val_acc",
        "test_acc",
        "g_mean",
        "frac_g_above_half",
        "epoch_time_s",
        "images_per_s",
    }
    assert required <= set(rows[0])
    assert rows[0]["lr"] == 0.1 and rows[0]["gate_lr"] == 0.01
    g = np.load(out / "gates.npz")
    n_train = 512 - 64
    assert g["g_b3"].shape == (2, n_train) and g["g_b3"].dtype == np.float16
    assert g["indices"].shape == (n_train,) and len(set(g["indices"])) == n_train
    assert not set(g["indices"]) & set(g["val_indices"])
    assert g["test_g_b3"].shape == (128,) and g["val_g_b3"].shape == (64,)
    assert np.array_equal(g["noisy"], g["labels"] != g["clean_labels"])
    assert 0.1 < g["noisy"].mean() < 0.4
    # Every training sample got a g in every epoch, and the epoch's mean is the logged one.
    assert (g["g_b3"] > 0).all()
    assert abs(float(g["g_b3"][1].astype(np.float64).mean()) - rows[1]["g_mean"]) < 1e-3
    assert summary["epochs"] == 2 and summary["final_test_acc"] == rows[-1]["test_acc"]
    assert summary["best_val_acc"] == max(r["val_acc"] for r in rows)
    assert summary["noisy_train"] == int(g["noisy"].sum())
    saved = load_config(out / "config.toml")
    assert saved == cfg
    # memgate analyze: noisy vs clean g, Figure 2, the hardest images.
    assert main(["analyze", str(out), "-o", str(tmp_path / "an")]) == 0
    for name in ("g_hist.png", "noisy_vs_clean.png", "top_g.png"):
        assert (tmp_path / "an" / name).exists(), name
    text = capsys.readouterr().out
    n_noisy = int(g["noisy"].sum())
    assert f"noisy labels (n={n_noisy:,d})" in text and "hardest classes" in text


def test_finished_run_is_not_retrained(npz, tmp_path, capsys):
    cfg = tiny(npz, tmp_path / "run", "train.epochs=1")
    training.train(cfg)
    stamp = (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns
    capsys.readouterr()
    training.train(cfg)
    assert "is finished" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns == stamp


def test_other_config_in_out_is_refused_unless_forced(npz, tmp_path):
    training.train(tiny(npz, tmp_path / "run", "train.epochs=1"))
    with pytest.raises(RunError, match="another config .*train.lr"):
        training.train(tiny(npz, tmp_path / "run", "train.epochs=1", "train.lr=0.05"))
    assert main(["train", "-c", str(tmp_path / "run" / "config.toml"), "train.lr=0.05"]) == 2
    s = training.train(tiny(npz, tmp_path / "run", "train.epochs=1", "train.lr=0.05"), force=True)
    assert load_config(tmp_path / "run" / "config.toml").train.lr == 0.05 and s["epochs"] == 1


def test_resume_mid_epoch_after_ctrl_c_is_bit_identical(npz, tmp_path, monkeypatch):
    ref = tiny(npz, tmp_path / "ref")
    training.train(ref)

    calls = {"n": 0}
    real_step = training.train_step

    def interrupting_step(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 20:  # epoch 2, batch 6 of 14: Ctrl-C arrives mid-epoch
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*a, **kw)

    monkeypatch.setattr(training, "train_step", interrupting_step)
    cfg = tiny(npz, tmp_path / "resumed")
    with pytest.raises(training.Interrupted, match="run the same command to resume"):
        training.train(cfg)
    c = ckpt_io.load(tmp_path / "resumed")
    assert (c["epoch"], c["batch"]) == (1, 6)
    assert not (tmp_path / "resumed" / "summary.json").exists()
    monkeypatch.setattr(training, "train_step", real_step)
    training.train(cfg)

    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _strip(training.read_metrics(tmp_path / "ref")) == _strip(training.read_metrics(tmp_path / "resumed"))
    ga, gb = np.load(tmp_path / "ref" / "gates.npz"), np.load(tmp_path / "resumed" / "gates.npz")
    assert np.array_equal(ga["g_b3"], gb["g_b3"])


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_matches_uninterrupted(npz, tmp_path):
    def cmd(out):
        cfg = tiny(npz, out, "train.epochs=5", "train.checkpoint_every_s=0.2")
        path = tmp_path / f"{Path(out).name}.toml"
        path.write_text(cfg.to_toml())
        return [sys.executable, "-m", "memgate", "train", "-c", str(path)]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd(tmp_path / "ref"), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(cmd(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        time.sleep(0.05)
    time.sleep(0.6)  # into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "summary.json").exists()
    c = ckpt_io.load(tmp_path / "killed")
    print("killed at", c["epoch"], c["batch"])
    assert (c["epoch"], c["batch"]) < (5, 0)
    subprocess.run(cmd(tmp_path / "killed"), check=True, env=env, capture_output=True)
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _strip(training.read_metrics(tmp_path / "ref")) == _strip(training.read_metrics(tmp_path / "killed"))


def test_crash_during_checkpoint_save_leaves_old_one_loadable(npz, tmp_path, monkeypatch):
    cfg = tiny(npz, tmp_path / "run", "train.epochs=1")
    training.train(cfg)
    path = tmp_path / "run" / "checkpoint.pt"
    before = ckpt_io.load(path)

    def crashing_save(obj, f):
        f.write(b"partial bytes of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_io.torch, "save", crashing_save)
    with pytest.raises(OSError):
        ckpt_io.save_atomic({"model": {}, "config": {}}, path)
    after = ckpt_io.load(path)
    assert after["epoch"] == before["epoch"] == 1
    assert all(torch.equal(after["model"][k], before["model"][k]) for k in before["model"])
    assert not list(path.parent.glob(".checkpoint.pt.tmp*"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(npz, tmp_path, monkeypatch):
    real_step = training.train_step
    calls = {"n": 0}

    def nan_in_epoch_2(*a, **kw):
        calls["n"] += 1
        r = real_step(*a, **kw)
        if calls["n"] > 14:
            r.loss = r.loss * float("nan")
        return r

    monkeypatch.setattr(training, "train_step", nan_in_epoch_2)
    with pytest.raises(RunError, match="non-finite in epoch 2.*last good checkpoint \\(epoch 1\\)"):
        training.train(tiny(npz, tmp_path / "run"))
    assert ckpt_io.load(tmp_path / "run")["epoch"] == 1


def test_checkpoints_load_with_weights_only(npz, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "x": Evil()}, bad)
    with pytest.raises(CheckpointError, match="cannot load"):
        ckpt_io.load(bad)


def test_checkpoint_of_another_architecture_is_refused(npz, tmp_path, capsys):
    training.train(tiny(npz, tmp_path / "run", "train.epochs=1"))
    other = build_model(
        load_config(None, ["model.depth=20", "model.gates=[3]"]).model,
        load_config(None, ["model.depth=20", "model.gates=[3]"]).gate,
    )
    c = ckpt_io.load(tmp_path / "run")
    with pytest.raises(CheckpointError, match="is a ResNet-14 basic.*but the model is ResNet-20"):
        ckpt_io.load_model_state(other, c, tmp_path / "run")
    # A gated model cannot start from a gated run, nor from a baseline of another depth.
    with pytest.raises(CheckpointError, match="gated run"):
        ckpt_io.init_from_baseline(other, tmp_path / "run")
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_baseline_init_copies_backbone_exactly_and_leaves_gate_fresh(npz, tmp_path):
    base = tiny(npz, tmp_path / "base", "model.gates=[]", "gate.hidden=[]", "train.epochs=1")
    training.train(base)
    baseline_state = _weights(tmp_path / "base")
    gated = tiny(npz, tmp_path / "gated", f"train.init={tmp_path / 'base'}", "train.epochs=1")
    torch.manual_seed(gated.seed)
    fresh = build_model(gated.model, gated.gate)
    torch.manual_seed(gated.seed)
    model = build_model(gated.model, gated.gate)
    copied = ckpt_io.init_from_baseline(model, tmp_path / "base")
    state = model.state_dict()
    assert set(copied) == set(baseline_state)  # complete: every baseline tensor, BN buffers included
    assert all(torch.equal(state[k], baseline_state[k]) for k in baseline_state)
    gate_keys = [k for k in state if k.startswith("gates.")]
    assert gate_keys and all(torch.equal(state[k], fresh.state_dict()[k]) for k in gate_keys)
    # Through the trainer, too, and the trained gated run differs from the baseline afterwards.
    trainer = training.Trainer(gated)
    assert all(torch.equal(trainer.net.state_dict()[k], baseline_state[k]) for k in baseline_state)
    deeper = tiny(npz, tmp_path / "g20", "model.depth=20", f"train.init={tmp_path / 'base'}")
    with pytest.raises(CheckpointError, match="does not match the model"):
        training.Trainer(deeper)


def test_k3_model_steps_on_every_third_batch_across_epochs(npz, tmp_path, monkeypatch):
    flags = []
    real_step = training.train_step

    def recording_step(*a, step_model, **kw):
        flags.append(step_model)
        return real_step(*a, step_model=step_model, **kw)

    monkeypatch.setattr(training, "train_step", recording_step)
    training.train(tiny(npz, tmp_path / "run", "train.gate_iters=3"))
    # 14 batches per epoch, 2 epochs; the count runs on across the epoch boundary.
    assert flags == [(i + 1) % 3 == 0 for i in range(28)]


def test_train_on_real_cifar10_subset_beats_chance(shared_cifar10, tmp_path):
    cfg = load_config(
        None,
        [
            "model.depth=14",
            "model.gates=[3]",
            f"data.path={shared_cifar10}",
            "data.train_subset=2000",
            "data.val_size=1000",
            "train.epochs=1",
            "device=cpu",
            f"out={tmp_path / 'real'}",
        ],
    )
    summary = training.train(cfg)
    assert summary["n_train"] == 2000
    assert summary["final_test_acc"] > 0.13
    g = np.load(tmp_path / "real" / "gates.npz")
    assert g["g_b3"].shape == (1, 2000) and g["test_g_b3"].shape == (10_000,)


def test_eval_command_reproduces_final_test_accuracy(npz, tmp_path, capsys):
    cfg = tiny(npz, tmp_path / "run", "train.epochs=1", "gate.input=first_unit")
    summary = training.train(cfg)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["test_acc"] == summary["final_test_acc"]
    g = np.load(tmp_path / "run" / "gates.npz")["test_g_b3"].astype(np.float32)
    assert abs(res["g_b3"]["mean"] - g.mean()) < 1e-3
    assert 0 <= res["hard_gate_compute_saving"] <= 1
    # With g forced to 0 the extra layers never run; hard routing gives g in {0, 1}.
    assert main(["eval", str(tmp_path / "run"), "--g-mode", "skip", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["g_b3"]["mean"] == 0.0
    assert main(["eval", str(tmp_path / "run" / "checkpoint.pt"), "--g-mode", "hard", "--json"]) == 0
    hard = json.loads(capsys.readouterr().out)
    assert hard["g_b3"]["mean"] == hard["g_b3"]["frac_above_half"]
    # --data evaluates on another copy of the data; a dataset of another class count is refused.
    assert main(["eval", str(tmp_path / "run"), "--data", str(npz), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == summary["final_test_acc"]
    other = tmp_path / "c100.npz"
    x = np.zeros((4, 32, 32, 3), np.uint8)
    np.savez(other, x_train=x, y_train=np.array([0, 1, 2, 50]), x_test=x, y_test=np.array([0, 1, 2, 3]))
    assert main(["eval", str(tmp_path / "run"), "--data", str(other)]) == 2
    assert "100 classes" in capsys.readouterr().err


def test_demo_runs_end_to_end_on_small_data(npz, tmp_path, capsys):
    from memgate.demo import run_demo

    run_demo(
        [f"data.path={npz}", "data.val_size=64", "data.train_subset=200", "train.epochs=2"], out=str(tmp_path / "d")
    )
    text = capsys.readouterr().out
    assert "mean g noisy / clean labels" in text and "final test accuracy" in text
    assert "hardest classes" in text and "a hard gate would skip" in text
    assert (tmp_path / "d" / "g_hist.png").stat().st_size > 10_000
    assert (tmp_path / "d" / "top_g.png").stat().st_size > 10_000
    assert len(training.read_metrics(tmp_path / "d")) == 2
