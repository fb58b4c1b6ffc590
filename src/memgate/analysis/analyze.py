"""`memgate analyze RUN`: every question memgate asks of one run, each answered by its own module.

gates (where g sends the training samples), detection (g and the standard scores against injected
label noise), scores (an external per-sample score against memgate's), suspects (export the most
suspicious samples for inspection or a retrain with ``data.exclude``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RunError
from ..train.rundir import CHECKPOINT, GATES, SIGNALS
from .detection import analyze_detection
from .gates import analyze_gates


def analyze_run(run: str | Path, out: str | Path | None = None) -> str:
    """Figures and a text summary of a run; returns the text."""
    run = Path(run)
    if not any((run / f).exists() for f in (GATES, SIGNALS, CHECKPOINT)):
        raise RunError(f"analyze: {run} is not a run folder (no {GATES}, {SIGNALS} or {CHECKPOINT}); pass a run's out")
    out_dir = Path(out) if out else run
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = analyze_gates(run, out_dir) if (run / GATES).exists() else [f"{run}: no gate (baseline run)"]
    if (run / SIGNALS).exists():
        lines += analyze_detection(run, out_dir)
    return "\n".join(lines)
