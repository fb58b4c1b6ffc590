"""`memgate agreement`: seed-to-seed agreement of per-sample scores, checked against values computed
here by hand and on the study's committed score files."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from memgate.analysis.agreement import agreement, top_overlap
from memgate.cli import main

STUDY = Path(__file__).resolve().parents[2] / "results" / "table1_r20"


def _save(path: Path, **arrays) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def test_top_overlap_counts_ties_pro_rata():
    a = np.arange(10.0)
    assert top_overlap(a, a.copy(), 0.1) == 1.0
    assert top_overlap(a, a[::-1].copy(), 0.1) == 0.0
    assert top_overlap(a, a[::-1].copy(), 0.5) == 0.0
    tied = np.array([0.0] * 8 + [1.0, 1.0])  # top 1 of 10: either of the two tied, one half each
    assert top_overlap(tied, tied.copy(), 0.1) == 0.5
    # top 3: the two at 1 are in for sure, the third place shared by the eight at 0 (1/8 each)
    assert top_overlap(tied, tied.copy(), 0.3) == pytest.approx((2 + 8 / 64) / 3)


def test_margin_is_turned_so_the_hard_end_is_compared_and_rows_are_matched_by_index(tmp_path):
    idx = np.arange(100, 110)
    margin = np.arange(10.0)
    swapped = margin.copy()
    swapped[[8, 9]] = swapped[[9, 8]]  # the easy end differs, the hard end (lowest margin) agrees
    labels = np.zeros(10, np.int16)
    a = _save(tmp_path / "a" / "s.npz", indices=idx, labels=labels, margin=margin, loss=margin)
    order = np.random.default_rng(0).permutation(10)  # the other file's rows in another order
    b = _save(tmp_path / "b" / "s.npz", indices=idx[order], labels=labels, margin=swapped[order], loss=swapped[order])
    r = agreement([a, b], shares=(0.1,))
    assert r["names"] == ["a", "b"] and r["samples"] == 10
    (m,) = r["scores"]["margin"]
    assert m["top"]["10"] == 1.0  # the lowest margin is sample 100 in both
    assert (
        r["scores"]["loss"][0]["top"]["10"] == 0.0
    )  # not turned: the highest loss is 109 in one file, 108 in the other
    assert m["spearman"] == pytest.approx(spearmanr(margin, swapped).statistic)


def test_three_files_give_three_pairs_and_the_markdown_their_range(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.normal(size=300)
    files = [
        _save(tmp_path / f"seed{s}" / "t.npz", indices=np.arange(300), g_b3=base + rng.normal(size=300) * s)
        for s in range(3)
    ]
    out = tmp_path / "rep" / "agree.md"
    assert main(["agreement", *map(str, files), "-o", str(out), "--top", "5"]) == 0
    r = json.loads(out.with_suffix(".json").read_text())
    pairs = r["scores"]["g_b3"]
    assert [(p["a"], p["b"]) for p in pairs] == [("seed0", "seed1"), ("seed0", "seed2"), ("seed1", "seed2")]
    g = [np.load(f)["g_b3"] for f in files]
    expect = [spearmanr(g[i], g[j]).statistic for i, j in ((0, 1), (0, 2), (1, 2))]
    assert [p["spearman"] for p in pairs] == pytest.approx(expect)
    row = next(line for line in out.read_text().splitlines() if line.startswith("| g_b3"))
    assert f"{np.mean(expect):+.3f} ({min(expect):+.3f} .. {max(expect):+.3f})" in row
    assert out.with_suffix(".png").stat().st_size > 0


def test_bad_inputs_are_one_line_errors_and_keep_existing_results(tmp_path, capsys):
    a = _save(tmp_path / "a" / "s.npz", indices=np.arange(10), labels=np.arange(10) % 2, loss=np.arange(10.0))
    other = _save(tmp_path / "b" / "s.npz", indices=np.arange(5, 15), labels=np.arange(5, 15) % 2, loss=np.arange(10.0))
    relabelled = _save(tmp_path / "c" / "s.npz", indices=np.arange(10), labels=np.ones(10, int), loss=np.arange(10.0))
    nokeys = _save(tmp_path / "d" / "s.npz", loss=np.arange(10.0))
    onehot = _save(tmp_path / "f" / "s.npz", indices=np.arange(10), labels=np.eye(10, dtype=int), loss=np.arange(10.0))
    short = _save(tmp_path / "g" / "s.npz", indices=np.arange(10), loss=np.arange(9.0))
    nan = _save(tmp_path / "h" / "s.npz", indices=np.arange(10), loss=np.r_[np.arange(9.0), np.nan])
    cases = [
        ([a], "at least two score files"),
        ([a, a], "given twice"),
        ([a, other], "keyed to other samples"),
        ([a, relabelled], "labels disagree"),
        ([a, nokeys], "has no 'indices'"),
        ([a, tmp_path / "missing.npz"], "missing"),
        ([a, onehot], "'labels' must be 1-D integers"),
        ([a, short], "'loss' has (9,) rows for 10 indices"),
        ([a, nan], "'loss' holds a non-finite value"),
    ]
    for files, message in cases:
        capsys.readouterr()
        assert main(["agreement", *map(str, files)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["agreement", str(a), str(other), "--partial"]) == 0
    assert "(5 samples, 2 files, 1 pair)" in capsys.readouterr().out
    assert main(["agreement", str(a), str(a.parent / ".." / "a" / "s.npz")]) == 2  # the same file by another path
    assert main(["agreement", str(a), str(other), "--top", "0"]) == 2
    assert main(["agreement", str(a), str(other), "--partial", "-o", str(tmp_path / "x.txt")]) == 2
    out = tmp_path / "agree.md"
    assert main(["agreement", str(a), str(other), "--partial", "-o", str(out)]) == 0
    kept = out.read_text()
    third = _save(tmp_path / "e" / "s.npz", indices=np.arange(10), labels=np.arange(10) % 2, loss=np.arange(10.0)[::-1])
    capsys.readouterr()
    assert main(["agreement", str(a), str(third), "-o", str(out)]) == 2  # another pair of files: refused
    assert "holds the agreement of other files" in capsys.readouterr().err
    assert out.read_text() == kept
    assert main(["agreement", str(a), str(third), "-o", str(out), "--force"]) == 0
    assert "| loss | -1.000 |" in out.read_text()


def test_on_the_study_files_g_agrees_across_seeds_as_scipy_computes():
    files = [STUDY / f"scratch_lr0.01_const_seed{s}" / "test_scores.npz" for s in (0, 1)]
    if not all(f.exists() for f in files):
        pytest.skip("the study's committed score files are absent")
    r = agreement(files, shares=(0.01,))
    z = [np.load(f) for f in files]
    rho = spearmanr(z[0]["g_b3"].astype(np.float64), z[1]["g_b3"].astype(np.float64)).statistic
    assert r["samples"] == 10_000
    assert r["scores"]["g_b3"][0]["spearman"] == pytest.approx(rho)
    # every score of the files, and neither the keys, the labels nor the network's own call
    scores = {"g_b3", "loss", "margin", "max_softmax", "prediction_depth", "curvature", "loss_sensitivity"}
    assert set(r["scores"]) == scores
