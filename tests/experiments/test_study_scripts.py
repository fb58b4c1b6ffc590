"""results/table1_r20/carry.sh, which carries the Table 1 study's runs across sessions: packed, the
run folder lost, unpacked: unfinished runs come back whole, finished ones whole until analyse.sh
has scored them, then slim but with what the sweep, the report and the baseline-initialised runs
read, byte for byte."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SLIM = {"config.toml", "summary.json", "metrics.jsonl", "inputs.json"}

pytestmark = pytest.mark.skipif(shutil.which("xz") is None, reason="carry.sh packs with tar -J (xz)")


def _run(root: Path, variant: str, epochs: int, finished: bool) -> Path:
    run = root / "table1_r20" / variant / "seed0"
    (run / "history").mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(bytes(range(256)) * 40)
    (run / "config.toml").write_text(f'out = "{run}"\n')
    (run / "metrics.jsonl").write_text("".join(f'{{"epoch": {e}}}\n' for e in range(1, epochs + 1)))
    (run / "inputs.json").write_text("{}")
    (run / "signals.npz").write_bytes(b"signals")
    (run / "history" / "loss.npy").write_bytes(b"history")
    (run / ".lock").write_text("123")
    if finished:
        (run / "summary.json").write_text('{"final_test_acc": 0.9}')
    return run


def _carry(study: Path, runs: Path, what: str) -> str:
    out = subprocess.run(
        ["bash", str(study / "carry.sh"), what],
        env={"RUNS": str(runs), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_carry_round_trip_keeps_runs_whole_until_scored_then_finished_ones_slim(tmp_path):
    study, runs = tmp_path / "study", tmp_path / "runs"
    study.mkdir()
    shutil.copy(ROOT / "results" / "table1_r20" / "carry.sh", study)
    base = _run(runs, "baseline", 3, finished=True)
    gated = _run(runs, "scratch_lr0.01_const", 3, finished=True)
    partial = _run(runs, "binit_lr0.01_const", 2, finished=False)
    before = {r.parent.name: _files(r) for r in (base, gated, partial)}
    whole = {k: {f: b for f, b in v.items() if f != ".lock"} for k, v in before.items()}

    # not scored yet: every run whole (the scores need the histories), the finished ones packed once
    said = _carry(study, runs, "pack")
    assert "baseline/seed0 finished" in said and "binit_lr0.01_const/seed0 at epoch 2" in said
    packed = study / "carry" / "baseline_seed0.tar.xz"
    stamp = packed.stat().st_mtime_ns
    assert _carry(study, runs, "pack").count("packed") == 1  # only the unfinished run again
    assert packed.stat().st_mtime_ns == stamp
    shutil.rmtree(runs)
    assert _carry(study, runs, "unpack").count("restored") == 3
    assert [_files(r) for r in (base, gated, partial)] == [whole[k] for k in before]

    # scored (analyse.sh wrote <variant>_seed0/train_scores.npz here): repacked slim, once
    for name in ("baseline_seed0", "scratch_lr0.01_const_seed0"):
        (study / name).mkdir()
        (study / name / "train_scores.npz").write_bytes(b"scores")
    assert _carry(study, runs, "pack").count("packed") == 3
    stamp = packed.stat().st_mtime_ns
    assert _carry(study, runs, "pack").count("packed") == 1
    assert packed.stat().st_mtime_ns == stamp
    shutil.rmtree(runs)
    assert _carry(study, runs, "unpack").count("restored") == 3
    assert _files(base) == {k: v for k, v in before["baseline"].items() if k in SLIM | {"checkpoint.pt"}}
    assert _files(gated) == {k: v for k, v in before["scratch_lr0.01_const"].items() if k in SLIM}
    assert _files(partial) == whole["binit_lr0.01_const"]

    (partial / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')  # trained on here
    assert "has 3 epochs here (packed: 2): kept" in _carry(study, runs, "unpack")
    assert (partial / "metrics.jsonl").read_text().count("epoch") == 3
