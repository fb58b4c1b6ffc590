"""`memgate ood`: structure, the exact null case, other class counts, and refused image shapes."""

import json

import numpy as np
import pytest
from runfactory import tiny

from memgate.analysis.ood import synthetic_images
from memgate.cli import main
from memgate.train.run import train as run_training


@pytest.fixture(scope="module")
def run(npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("ood") / "run"
    run_training(tiny(npz, out, "train.epochs=1"))
    return out


def test_ood_against_itself_is_chance_and_other_sources_are_scored(run, npz, tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    y = np.arange(200) % 100  # 100 classes: the OOD set's labels and class count are ignored
    np.savez(tmp_path / "c100.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    argv = [
        "ood",
        str(run),
        "--ood",
        str(npz),
        "--ood",
        str(tmp_path / "c100.npz"),
        "--ood",
        "gaussian",
        "--ood",
        "uniform",
    ]
    assert main(argv) == 0
    res = json.loads((run / "ood.json").read_text())
    assert set(res["ood"]) == {str(npz), str(tmp_path / "c100.npz"), "gaussian", "uniform"}
    keys = {"g_b3", "gate_neg_max_softmax_b3", "neg_max_softmax", "energy"}
    for src, r in res["ood"].items():
        assert set(r["scores"]) == keys, src
    # The run's own test split as "OOD": identical score sets, so every AUROC is exactly one half.
    for k, v in res["ood"][str(npz)]["scores"].items():
        assert v["auroc"] == pytest.approx(0.5), k
    assert res["ood"]["gaussian"]["n"] == 128 and "| energy |" in (run / "ood.md").read_text()
    # Results get committed: the in-distribution archive is named by its file, not its absolute path.
    assert res["in_distribution"].endswith(f"({npz.name}, test, 128)")
    assert str(npz.parent) not in res["in_distribution"]


def test_ood_images_that_are_not_32x32_rgb_are_refused(run, tmp_path, capsys):
    x = np.zeros((4, 28, 28, 3), np.uint8)
    np.savez(tmp_path / "small.npz", x_train=x, y_train=np.zeros(4, int), x_test=x, y_test=np.zeros(4, int))
    capsys.readouterr()
    assert main(["ood", str(run), "--ood", str(tmp_path / "small.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "expected (N, 32, 32, 3)" in err


def test_synthetic_sets_are_seeded_uint8():
    a, b = synthetic_images("gaussian", 5), synthetic_images("gaussian", 5)
    assert a.dtype == np.uint8 and a.shape == (5, 32, 32, 3) and np.array_equal(a, b)
    assert 100 < synthetic_images("uniform", 50).mean() < 155
