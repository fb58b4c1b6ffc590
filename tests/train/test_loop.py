import dataclasses
from pathlib import Path

import numpy as np
import pytest
from runfactory import tiny

import memgate.train.loop as training
from memgate.cli import main
from memgate.config import load_config
from memgate.errors import RunError
from memgate.train import checkpoint as ckpt_io
from memgate.train.run import train as run_training
from memgate.train.rundir import read_metrics


def test_run_outputs_metrics_gates_checkpoint_summary(npz, tmp_path, capsys):
    cfg = tiny(npz, tmp_path / "run", "data.label_noise=0.25")
    summary = run_training(cfg)
    out = Path(cfg.out)
    for name in ("config.toml", "metrics.jsonl", "gates.npz", "checkpoint.pt", "summary.json", "g_hist.png"):
        assert (out / name).exists(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    rows = read_metrics(out)
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
    assert saved.train.precision == summary["precision"] in ("bf16", "fp32")  # what ran, recorded
    assert saved == dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=saved.train.precision))
    # memgate analyze: noisy vs clean g, Figure 2, the hardest images.
    assert main(["analyze", str(out), "-o", str(tmp_path / "an")]) == 0
    for name in ("g_hist.png", "noisy_vs_clean.png", "top_g.png"):
        assert (tmp_path / "an" / name).exists(), name
    text = capsys.readouterr().out
    n_noisy = int(g["noisy"].sum())
    assert f"noisy labels (n={n_noisy:,d})" in text and "hardest classes" in text


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
        run_training(tiny(npz, tmp_path / "run"))
    assert ckpt_io.load(tmp_path / "run")["epoch"] == 1


def test_k3_model_steps_on_every_third_batch_across_epochs(npz, tmp_path, monkeypatch):
    flags = []
    real_step = training.train_step

    def recording_step(*a, step_model, **kw):
        flags.append(step_model)
        return real_step(*a, step_model=step_model, **kw)

    monkeypatch.setattr(training, "train_step", recording_step)
    run_training(tiny(npz, tmp_path / "run", "train.gate_iters=3"))
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
    summary = run_training(cfg)
    assert summary["n_train"] == 2000
    assert summary["final_test_acc"] > 0.13
    g = np.load(tmp_path / "real" / "gates.npz")
    assert g["g_b3"].shape == (1, 2000) and g["test_g_b3"].shape == (10_000,)


def test_train_without_a_terminal_prints_progress_within_epochs_and_ends_with_one_line(
    npz, tmp_path, monkeypatch, capsys
):
    """A run logged to a file (a scheduler) says where it is within an epoch; every run ends with one
    line naming the folder, the final test accuracy and the time, also when it was already finished."""
    monkeypatch.setattr(training, "PROGRESS_LINE_S", 0.0)  # a line after every batch but the last
    cfg = tiny(npz, tmp_path / "run")
    path = tmp_path / "run.toml"
    path.write_text(cfg.to_toml())
    assert main(["train", "-c", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    progress = [ln for ln in lines if ln.startswith("epoch 1/2: batch ")]
    assert [ln.split(" | ")[0] for ln in progress] == [f"epoch 1/2: batch {b}/14" for b in range(1, 14)]
    assert all(ln.endswith(" img/s") and "| loss " in ln and "| train " in ln for ln in progress)
    summary = read_metrics(cfg.out)
    acc = 100 * summary[-1]["test_acc"]
    assert lines[-1].startswith(f"{cfg.out}: final test accuracy {acc:.2f}%, best val ")
    assert lines[-1].endswith(" min of training") and "after 2 epochs" in lines[-1]
    assert main(["train", "-c", str(path)]) == 0
    again = capsys.readouterr().out.splitlines()
    assert again == [f"{cfg.out} was already finished (nothing trained)", lines[-1]]


@pytest.mark.slow
def test_train_compile_trains_a_tiny_net_like_eager(npz, tmp_path):
    """train.compile=true (torch.compile, inductor on the CPU): the run trains, resumes its checkpoint
    format, and ends where the eager run ends up to compiled kernels' rounding."""
    import torch

    # fp32: bf16 autocast (the default on CPUs with native bf16) rounds fused and eager kernels apart
    over = [
        "model.depth=8",
        "model.gates=[]",
        "gate.hidden=[]",
        "train.epochs=1",
        "train.batch_size=64",
        "train.amp=false",
    ]
    run_training(tiny(npz, tmp_path / "eager", *over))
    run_training(tiny(npz, tmp_path / "compiled", *over, "train.compile=true"))
    a, b = ckpt_io.load(tmp_path / "eager")["model"], ckpt_io.load(tmp_path / "compiled")["model"]
    assert a.keys() == b.keys()  # the compiled wrapper adds no prefix: checkpoints stay interchangeable
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-2) for k in a)  # 7 steps at LR 0.1 amplify rounding
    ra, rb = read_metrics(tmp_path / "eager"), read_metrics(tmp_path / "compiled")
    assert abs(ra[0]["train_loss"] - rb[0]["train_loss"]) < 1e-3
