import pytest
from runfactory import tiny

from memgate.cli import main
from memgate.config import load_config
from memgate.errors import RunError
from memgate.train.run import train as run_training


def test_finished_run_is_not_retrained(npz, tmp_path, capsys):
    cfg = tiny(npz, tmp_path / "run", "train.epochs=1")
    run_training(cfg)
    stamp = (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns
    capsys.readouterr()
    run_training(cfg)
    assert "was already finished (nothing trained)" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns == stamp


def test_other_config_in_out_is_refused_unless_forced(npz, tmp_path):
    run_training(tiny(npz, tmp_path / "run", "train.epochs=1"))
    with pytest.raises(RunError, match="another config .*train.lr"):
        run_training(tiny(npz, tmp_path / "run", "train.epochs=1", "train.lr=0.05"))
    assert main(["train", "-c", str(tmp_path / "run" / "config.toml"), "train.lr=0.05"]) == 2
    s = run_training(tiny(npz, tmp_path / "run", "train.epochs=1", "train.lr=0.05"), force=True)
    assert load_config(tmp_path / "run" / "config.toml").train.lr == 0.05 and s["epochs"] == 1
