"""Suspects export, external scores and the retrain without the suspects (data.exclude)."""

import csv
import json

import numpy as np
import pytest
from runfactory import tiny

from memgate.analysis.detection import scores
from memgate.analysis.external import within_class_spearman
from memgate.cli import main
from memgate.data import load_dataset, make_split
from memgate.train.run import train as run_training
from memgate.train.rundir import read_gates, read_signals


@pytest.fixture(scope="module")
def noisy_run(npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("suspects") / "run"
    run_training(tiny(npz, out, "train.epochs=2", "data.label_noise=0.25"))
    return out


def test_suspects_csv_and_png(noisy_run, capsys):
    assert main(["analyze", str(noisy_run), "--suspects", "10", "--by", "loss_mean"]) == 0
    rows = list(csv.DictReader((noisy_run / "suspects.csv").open()))
    head = list(rows[0])
    assert len(rows) == 10 and len(set(head)) == len(head)
    assert head == [
        "index",
        "label",
        "label_name",
        "predicted",
        "predicted_name",
        "loss_mean",
        "g",
        "loss",
        "aum",
        "noisy",
        "clean_label",
    ]
    sig = read_signals(noisy_run)
    top = np.argsort(-sig["loss"].astype(np.float32).mean(0), kind="stable")[:10]
    assert [int(r["index"]) for r in rows] == sig["indices"][top].tolist()
    assert all(r["noisy"] in ("0", "1") for r in rows)
    assert (noisy_run / "suspects.png").stat().st_size > 5000
    capsys.readouterr()
    assert main(["analyze", str(noisy_run), "--suspects", "5", "--by", "nonsense"]) == 2
    assert "is not a score of this run" in capsys.readouterr().err


def test_external_scores_spearman(noisy_run, tmp_path, capsys):
    sig = read_signals(noisy_run)
    mine = scores(sig, read_gates(noisy_run))["loss_mean"]
    # indexed by dataset training index: a monotone transform of loss_mean, and a permutation of it
    full = np.full(int(sig["indices"].max()) + 1, -1.0)
    full[sig["indices"]] = np.exp(mine)
    np.savez(tmp_path / "mono.npz", scores=full)
    perm = np.random.default_rng(0).permutation(len(mine))
    np.savez(tmp_path / "perm.npz", indices=sig["indices"], scores=mine[perm])
    assert main(["analyze", str(noisy_run), "--scores", str(tmp_path / "mono.npz")]) == 0
    res = json.loads((noisy_run / "external_scores.json").read_text())
    assert res["spearman"]["loss_mean"] == pytest.approx(1.0)
    assert "auroc_noisy" in res and res["n"] == len(mine)
    assert res["spearman_within_class"]["loss_mean"]["mean"] == pytest.approx(1.0)
    assert (noisy_run / "external_scores.png").stat().st_size > 5000
    assert main(["analyze", str(noisy_run), "--scores", str(tmp_path / "perm.npz")]) == 0
    res = json.loads((noisy_run / "external_scores.json").read_text())
    assert abs(res["spearman"]["loss_mean"]) < 0.2
    # FILE.npz:KEY reads the array KEY: the same monotone transform under another name
    np.savez(tmp_path / "cols.npz", indices=sig["indices"], loss_exp=np.exp(mine), scores=mine[perm])
    assert main(["analyze", str(noisy_run), "--scores", f"{tmp_path / 'cols.npz'}:loss_exp"]) == 0
    res = json.loads((noisy_run / "external_scores.json").read_text())
    assert res["spearman"]["loss_mean"] == pytest.approx(1.0)
    np.savez(tmp_path / "bad.npz", indices=np.array([1.5, 2.5]), scores=np.array([0.1, 0.2]))
    capsys.readouterr()
    assert main(["analyze", str(noisy_run), "--scores", str(tmp_path / "bad.npz")]) == 2
    assert "'indices' must be 1-D integers" in capsys.readouterr().err


def test_within_class_spearman_by_hand():
    # class 0: the score ranks like ext; class 1: against it; class 2: too small to rank (one sample)
    score = np.array([1.0, 2, 3, 10, 20, 30, 5])
    ext = np.array([0.1, 0.2, 0.3, 3, 2, 1, 9])
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    w = within_class_spearman(score, ext, labels)
    assert w["per_class"] == {"0": pytest.approx(1.0), "1": pytest.approx(-1.0)} and w["mean"] == pytest.approx(0.0)
    assert within_class_spearman(score, np.ones(7), labels) == {"mean": None, "per_class": {}}


def test_exclude_drops_exactly_those_indices_and_keeps_the_other_labels(noisy_run, npz, tmp_path, capsys):
    main(["analyze", str(noisy_run), "--suspects", "10"])
    base = tiny(npz, tmp_path / "r", "data.label_noise=0.25")
    ds = load_dataset(npz)
    full = make_split(ds, base.data)
    cut = make_split(
        ds, tiny(npz, tmp_path / "r", "data.label_noise=0.25", f"data.exclude={noisy_run / 'suspects.csv'}").data
    )
    dropped = [int(r["index"]) for r in csv.DictReader((noisy_run / "suspects.csv").open())]
    assert sorted(set(full.train_idx) - set(cut.train_idx)) == sorted(dropped)
    keep = ~np.isin(full.train_idx, dropped)
    assert np.array_equal(cut.train_labels, full.train_labels[keep]) and np.array_equal(cut.noisy, full.noisy[keep])
    summary = run_training(
        tiny(npz, tmp_path / "retrain", "train.epochs=1", f"data.exclude={noisy_run / 'suspects.csv'}")
    )
    assert summary["n_train"] == 448 - 10


@pytest.mark.parametrize(
    "content,needle",
    [
        ("index\n999999\n", "lists index 999999, which is no training sample"),
        ("1.5\n", "holds float64"),
        ("x,y\nq,1\n", "cannot read"),
    ],
)
def test_bad_exclude_files(npz, tmp_path, capsys, content, needle):
    (tmp_path / "ex.csv").write_text(content)
    (tmp_path / "c.toml").write_text(tiny(npz, tmp_path / "run", f"data.exclude={tmp_path / 'ex.csv'}").to_toml())
    capsys.readouterr()
    assert main(["train", "-c", str(tmp_path / "c.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_exclude_of_a_validation_index_names_the_validation_split(npz, tmp_path, capsys):
    ds = load_dataset(npz)
    val = make_split(ds, tiny(npz, tmp_path).data).val_idx
    np.save(tmp_path / "ex.npy", val[:2])
    (tmp_path / "c.toml").write_text(tiny(npz, tmp_path / "run", f"data.exclude={tmp_path / 'ex.npy'}").to_toml())
    capsys.readouterr()
    assert main(["train", "-c", str(tmp_path / "c.toml")]) == 2
    assert "which is the validation split" in capsys.readouterr().err


def _rgb_run(tmp_path):
    """A gated run on a 3-class image-folder zip (classes red, green, blue; 32 training images each)."""
    from datafactory import image_tree_files, write_zip

    rng = np.random.default_rng(0)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])

    def make(n):
        y = np.repeat(np.arange(3), n // 3)
        x = np.clip(colours[y][:, None, None, :] + rng.normal(0, 30, (len(y), 32, 32, 3)), 0, 255).astype(np.uint8)
        return x, y

    (xtr, ytr), (xte, yte) = make(96), make(30)
    data = write_zip(tmp_path / "rgb.zip", image_tree_files(xtr, ytr, xte, yte, names=RGB, prefix="rgb/"))
    over = ["model.num_classes=3", f"data.path={data}", "data.val_size=0", "train.epochs=1", "train.batch_size=32"]
    run_training(tiny(data, tmp_path / "run", *over))
    return tmp_path / "run"


RGB = ["red", "green", "blue"]


def test_a_score_file_of_an_image_folder_may_be_keyed_by_file_paths(tmp_path, capsys):
    run = _rgb_run(tmp_path)
    sig = read_signals(run)
    files = [f"rgb/train/{RGB[c]}/{i:05d}.png" for i, c in enumerate(sig["clean_labels"])]  # by dataset index
    order = np.random.default_rng(1).permutation(len(files))
    loss = sig["loss"][-1].astype(np.float64)
    np.savez(tmp_path / "by_path.npz", paths=np.array(files)[order], scores=loss[order])
    assert main(["analyze", str(run), "-o", str(tmp_path / "o"), "--scores", str(tmp_path / "by_path.npz")]) == 0
    res = json.loads((tmp_path / "o" / "external_scores.json").read_text())
    assert res["n"] == len(files) and res["spearman"]["loss_final"] == pytest.approx(1.0)
    np.savez(tmp_path / "elsewhere.npz", paths=np.array([f"other/{f}" for f in files]), scores=loss)
    capsys.readouterr()
    assert main(["analyze", str(run), "-o", str(tmp_path / "o2"), "--scores", str(tmp_path / "elsewhere.npz")]) == 2
    assert "covers 0 of this run's 96 training samples" in capsys.readouterr().err


def test_suspects_of_an_image_folder_name_their_files_and_classes(tmp_path, capsys):
    """A 3-class image-folder dataset: each suspect's file inside the archive and its class names; the
    hardest and easiest classes are never the same classes; ranking by g gives g one column."""
    _rgb_run(tmp_path)
    names = RGB
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "run"), "--suspects", "6"]) == 0
    out = capsys.readouterr().out
    hardest = out.split("hardest classes (mean final g): ")[1].splitlines()[0]
    easiest = out.split("easiest classes: ")[1].splitlines()[0]
    assert len(hardest.split(", ")) == 1 and len(easiest.split(", ")) == 1
    assert hardest.split()[0] != easiest.split()[0]
    rows = list(csv.DictReader((tmp_path / "run" / "suspects.csv").open()))
    head = list(rows[0])
    assert head[:6] == ["index", "path", "label", "label_name", "predicted", "predicted_name"]
    assert "g_final_b3" in head and "g" not in head and len(set(head)) == len(head)
    for r in rows:
        i, label = int(r["index"]), int(r["label"])
        assert r["path"] == f"rgb/train/{names[label]}/{i:05d}.png" and r["label_name"] == names[label]
        assert r["predicted_name"] == names[int(r["predicted"])]


def test_a_score_file_keyed_to_other_samples_is_refused(noisy_run, tmp_path, capsys):
    """Scores in the run's own column order (the natural mistake) are keyed as dataset indices 0..N-1,
    which cover only some of the run's samples: refused, saying how keys are read; --partial compares
    on the covered ones; labels that disagree with the run's (another order of the data) are refused."""
    sig = read_signals(noisy_run)
    n, idx = len(sig["indices"]), sig["indices"]
    np.savez(tmp_path / "own_order.npz", scores=np.arange(n, dtype=np.float64))
    assert (
        main(["analyze", str(noisy_run), "-o", str(tmp_path / "o1"), "--scores", str(tmp_path / "own_order.npz")]) == 2
    )
    err = capsys.readouterr().err
    covered = int(np.isin(np.arange(n), idx).sum())
    assert f"covers {covered:,d} of this run's {n:,d} training samples" in err
    assert "its keys are read as dataset index ('indices', else the position in 'scores')" in err
    assert "or pass --partial" in err and not (tmp_path / "o1").exists()
    argv = ["analyze", str(noisy_run), "-o", str(tmp_path / "o2"), "--scores", str(tmp_path / "own_order.npz")]
    assert main([*argv, "--partial"]) == 0
    assert json.loads((tmp_path / "o2" / "external_scores.json").read_text())["n"] == covered
    # the right keys, with labels: accepted with the run's original labels or its given (noisy) ones ...
    scores_ = np.linspace(0, 1, n)
    for name, labels in (("clean", sig["clean_labels"]), ("given", sig["labels"])):
        np.savez(tmp_path / f"{name}.npz", indices=idx, scores=scores_, labels=labels)
        assert (
            main(["analyze", str(noisy_run), "-o", str(tmp_path / name), "--scores", str(tmp_path / f"{name}.npz")])
            == 0
        )
    # ... and refused when they belong to other samples (the same keys in another dataset order)
    np.savez(tmp_path / "other.npz", indices=idx, scores=scores_, labels=np.roll(sig["clean_labels"], 7))
    capsys.readouterr()
    assert main(["analyze", str(noisy_run), "-o", str(tmp_path / "o3"), "--scores", str(tmp_path / "other.npz")]) == 2
    err = capsys.readouterr().err
    assert "its labels disagree with this run's on" in err and "keyed to other samples" in err
