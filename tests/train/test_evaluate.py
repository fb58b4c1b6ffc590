import json

import numpy as np
from runfactory import tiny

from memgate.cli import main
from memgate.train.run import train as run_training


def test_eval_command_reproduces_final_test_accuracy(npz, tmp_path, capsys):
    cfg = tiny(npz, tmp_path / "run", "train.epochs=1", "gate.input=first_unit")
    summary = run_training(cfg)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["test_acc"] == summary["final_test_acc"]
    g = np.load(tmp_path / "run" / "gates.npz")["test_g_b3"].astype(np.float32)
    assert abs(res["g_b3"]["mean"] - g.mean()) < 1e-3
    assert 0 <= res["hard_gate_compute_saving"] <= 1
    assert main(["analyze", str(tmp_path / "run")]) == 0  # an o1 gate: the skip is real, and said so
    assert "a hard gate would skip the extra layers" in capsys.readouterr().out
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
    x = np.zeros((60, 32, 32, 3), np.uint8)  # more than 50 distinct labels below 100: read as CIFAR-100
    np.savez(other, x_train=x, y_train=np.arange(60), x_test=x, y_test=np.arange(60))
    assert main(["eval", str(tmp_path / "run"), "--data", str(other)]) == 2
    assert "100 classes" in capsys.readouterr().err
