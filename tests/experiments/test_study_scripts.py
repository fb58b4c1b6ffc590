"""results/table1_r20/carry.sh, which carries the Table 1 study's runs across sessions: packed, the
run folder lost, unpacked: unfinished runs come back whole, finished ones slim but with what the
sweep, the report and the baseline-initialised runs read, byte for byte."""

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


def test_carry_round_trip_keeps_unfinished_runs_whole_and_finished_ones_slim(tmp_path):
    study, runs = tmp_path / "study", tmp_path / "runs"
    study.mkdir()
    shutil.copy(ROOT / "results" / "table1_r20" / "carry.sh", study)
    base = _run(runs, "baseline", 3, finished=True)
    gated = _run(runs, "scratch_lr0.01_const", 3, finished=True)
    partial = _run(runs, "binit_lr0.01_const", 2, finished=False)
    before = {r.parent.name: _files(r) for r in (base, gated, partial)}

    said = _carry(study, runs, "pack")
    assert "baseline/seed0 finished" in said and "binit_lr0.01_const/seed0 at epoch 2" in said
    packed = study / "carry" / "baseline_seed0.tar.xz"
    stamp = packed.stat().st_mtime_ns
    assert _carry(study, runs, "pack").count("packed") == 1  # finished runs are packed once
    assert packed.stat().st_mtime_ns == stamp

    shutil.rmtree(runs)
    said = _carry(study, runs, "unpack")
    assert said.count("restored") == 3
    assert _files(base) == {k: v for k, v in before["baseline"].items() if k in SLIM | {"checkpoint.pt"}}
    assert _files(gated) == {k: v for k, v in before["scratch_lr0.01_const"].items() if k in SLIM}
    assert _files(partial) == {k: v for k, v in before["binit_lr0.01_const"].items() if k != ".lock"}

    (partial / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')  # trained on here
    assert "has 3 epochs here (packed: 2): kept" in _carry(study, runs, "unpack")
    assert (partial / "metrics.jsonl").read_text().count("epoch") == 3
