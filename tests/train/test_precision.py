"""bf16 autocast where the CPU has native bf16 (detection mocked both ways), fp32 elsewhere, and the
precision that ran recorded in the run's config and summary."""

import json

import pytest
import torch
from runfactory import tiny

import memgate.train.loop as training
import memgate.train.precision as precision
from memgate.cli import main
from memgate.config import load_config
from memgate.train.run import train as run_training

EPYC = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
OLD_XEON = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_bf16_is_read_from_the_cpu_flags():
    assert precision.cpu_has_bf16(EPYC) and precision.cpu_has_bf16(ARM)
    assert not precision.cpu_has_bf16(OLD_XEON) and not precision.cpu_has_bf16("")
    cpu = torch.device("cpu")
    assert precision.resolve_precision(cpu, amp=False)[0] == "fp32"


@pytest.mark.parametrize("capable", [True, False])
def test_the_cpu_decides_and_the_run_records_it(npz, tmp_path, monkeypatch, capsys, capable):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda *a: capable)
    cfg = tiny(npz, tmp_path / "run", "train.epochs=1")
    summary = run_training(cfg)
    want = "bf16" if capable else "fp32"
    assert summary["precision"] == want
    assert load_config(tmp_path / "run" / "config.toml").train.precision == want
    out = capsys.readouterr().out
    assert ("native bf16" in out) and (("has no native bf16" in out) != capable)
    # the trainer's autocast is the one decided
    cfg2 = tiny(npz, tmp_path / "run2", "train.epochs=1")
    calls = []
    real_autocast = precision.autocast
    monkeypatch.setattr(training, "autocast", lambda d, p: calls.append(p) or real_autocast(d, p))
    run_training(cfg2)
    assert calls == [want]


def test_amp_false_forces_fp32_on_a_capable_cpu(npz, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda *a: True)
    assert run_training(tiny(npz, tmp_path / "run", "train.epochs=1", "train.amp=false"))["precision"] == "fp32"


def test_bf16_and_fp32_give_different_but_close_results(npz, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda *a: True)
    bf = run_training(tiny(npz, tmp_path / "bf", "train.epochs=1"))
    fp = run_training(tiny(npz, tmp_path / "fp", "train.epochs=1", "train.amp=false"))
    assert bf["final_test_acc"] is not None and fp["final_test_acc"] is not None
    rows = [json.loads((tmp_path / r / "metrics.jsonl").read_text().splitlines()[0]) for r in ("bf", "fp")]
    assert rows[0]["train_loss"] != rows[1]["train_loss"]  # bf16 really computed
    assert abs(rows[0]["train_loss"] - rows[1]["train_loss"]) < 0.1


def test_a_bf16_run_is_not_continued_in_fp32(npz, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda *a: True)
    cfg = tiny(npz, tmp_path / "run", "train.epochs=1")
    (tmp_path / "c.toml").write_text(cfg.to_toml())
    assert main(["train", "-c", str(tmp_path / "c.toml")]) == 0
    before = (tmp_path / "run" / "config.toml").read_text()
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda *a: False)  # the same folder on another machine
    capsys.readouterr()
    assert main(["train", "-c", str(tmp_path / "c.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.precision: 'bf16' there, 'fp32' now" in err, err
    assert main(["train", "-c", str(tmp_path / "c.toml"), "train.precision=bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no native bf16" in err, err
    assert (tmp_path / "run" / "config.toml").read_text() == before


@pytest.mark.parametrize(
    "major,name,expected",
    [(9, "NVIDIA H100", "bf16"), (8, "NVIDIA A100", "bf16"), (7, "Tesla V100", "fp32"), (7, "Tesla T4", "fp32")],
)
def test_a_gpu_without_native_bf16_runs_fp32_and_says_which(monkeypatch, major, name, expected):
    """Faked GPUs: bf16 autocast only on Ampere and later; a V100 or T4 (bf16 only emulated) gets fp32."""
    import contextlib

    monkeypatch.setattr(precision.torch.version, "hip", None)
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(precision.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(precision.torch.cuda, "device", lambda d: contextlib.nullcontext())
    props = type("Props", (), {"major": major})()
    monkeypatch.setattr(precision.torch.cuda, "get_device_properties", lambda d: props)
    monkeypatch.setattr(precision.torch.cuda, "get_device_name", lambda d: name)
    got, why = precision.resolve_precision(torch.device("cuda", 0), amp=True)
    assert got == expected
    if expected == "fp32":
        assert why == f"fp32: {name} has no native bf16 (before Ampere: V100, T4, P100), so train.amp has no effect"
