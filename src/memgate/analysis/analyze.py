"""`memgate analyze RUN`: every question memgate asks of one run, each answered by its own module.

gates (where g sends the training samples), memorisation (wrong labels fitted per epoch, the data
map), detection (g and the standard scores against injected label noise), scores (an external
per-sample score against memgate's), suspects (export the most suspicious samples for inspection
or a retrain with ``data.exclude``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RunError
from ..outputs import claim, record
from ..train.rundir import CHECKPOINT, GATES, SIGNALS, present, read_run_arrays
from .detection import analyze_detection, scores
from .external import compare_external, read_external, run_labels
from .gates import analyze_gates
from .memorisation import analyze_memorisation
from .suspects import check_by, write_suspects


def analyze_run(
    run: str | Path,
    out: str | Path | None = None,
    external: str | Path | None = None,
    suspects: int = 0,
    by: str | None = None,
    force: bool = False,
    partial: bool = False,
) -> str:
    """Figures and a text summary of a run; returns the text. ``external``: an .npz of per-sample
    scores to compare; ``suspects``: export that many most suspicious samples, ranked ``by`` a score.
    Every input is checked before anything is written; ``out`` must not hold another run's results
    (unless ``force``)."""
    run = Path(run)
    if not any((run / f).exists() for f in (GATES, SIGNALS, CHECKPOINT)):
        raise RunError(f"analyze: {run} is not a run folder (no {GATES}, {SIGNALS} or {CHECKPOINT}); pass a run's out")
    if not present(run, SIGNALS) and (external or suspects):
        raise RunError(
            f"analyze: {run} has no {SIGNALS} (trained by an older memgate); retrain it for --scores/--suspects"
        )
    signals, gates = read_run_arrays(run) if present(run, SIGNALS) else (None, None)
    score_map = scores(signals, gates) if signals else {}
    paths: tuple[str, ...] = ()
    if external:
        paths = _train_paths(run)
        # a bad file, or one keyed to other samples, fails here, before any output
        read_external(external, signals["indices"], run_labels(signals), paths, partial)
    if suspects:
        check_by(score_map, by)
    out_dir = claim(out or run, run, "analyze", force)
    lines = analyze_gates(run, out_dir) if present(run, GATES) else [f"{run}: no gate (baseline run)"]
    if signals is not None:
        lines += analyze_memorisation(run, out_dir)
        lines += analyze_detection(run, out_dir)
        if external:
            lines += compare_external(external, signals, score_map, out_dir, paths, partial)
        if suspects:
            lines += write_suspects(run, out_dir, signals, score_map, suspects, by)
    record(out_dir, run, "analyze")
    return "\n".join(lines)


def _train_paths(run: Path) -> tuple[str, ...]:
    """The training files of the run's dataset (image folders), to read a score file keyed by paths."""
    from ..errors import MemgateError
    from ..train.evaluate import run_dataset

    try:
        return run_dataset(run).train_paths
    except MemgateError:  # the data are not here: keys by index still work
        return ()
