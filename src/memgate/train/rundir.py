"""The run directory's contract: its file names, its state (fresh, resume, done), and its files.

A run directory holds config.toml (the resolved config), metrics.jsonl (one strict-JSON line per
epoch), gates.npz (g of every training sample at every epoch), signals.npz (per-sample loss,
margin, correctness, gate loss and entropy at every epoch), checkpoint.pt, tb/ (TensorBoard),
summary.json (written last: its presence means "finished") and g_hist.png. Every file is written
through ``memgate.atomic``; nothing else in memgate names these files. While a run trains, the
per-epoch histories live in history/ (``train/history.py``, appended row by row) and the two npz
files name the rows they cover (``history_names``, ``history_epochs``); the readers here join them,
so every reader sees whole epochs x N arrays either way. A finished run's npz files hold them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .. import schema
from ..atomic import sanitize, write_atomic, write_json, write_text
from ..config import Config, config_from_dict
from ..data.npz import oversized_member
from ..errors import ConfigError, RunError
from ..parsing import loads_json, read_toml

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
GATES = "gates.npz"
SIGNALS = "signals.npz"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
G_HIST_PNG = "g_hist.png"
TENSORBOARD = "tb"
HISTORY = "history"  # per-epoch histories of a run in progress, one .npy each (train/history.py)
SNAPSHOTS = "snapshots"  # the network's weights every train.snapshot_every epochs, epoch{e:03d}.pt
HISTORY_NAMES, HISTORY_EPOCHS = "history_names", "history_epochs"  # an npz's reference to them
LOCK = ".lock"
OOD = "ood.json"  # written by `memgate ood` (default: into the run)
DETECTION = "detection.json"  # written by `memgate analyze` of a run with injected noise (default: into the run)
TRADEOFF = "tradeoff.json"  # written by `memgate tradeoff` (default: into the run)
INPUTS = "inputs.json"  # sha256 of the files the config names (data.path, data.exclude, train.init)
RUN_FILES = (CONFIG, INPUTS, METRICS, GATES, SIGNALS, CHECKPOINT, SUMMARY, G_HIST_PNG)
INPUT_KEYS = ("data.path", "data.exclude", "train.init")
NON_RESULT_KEYS = ("train.checkpoint_every_s", "train.snapshot_every")  # keys that do not change what a run computes
UNRECORDED = "train.precision"  # "" in a config that was written before a run resolved it


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _result_keys(cfg: Config) -> dict[str, Any]:
    flat = _flat(cfg.comparable())
    for k in NON_RESULT_KEYS:
        flat.pop(k, None)
    return flat


def config_difference(cfg: Config, cfg_file: Path) -> list[tuple[str, Any, Any]]:
    """(key, value there, value now) for every result-defining key that differs from ``cfg_file``."""
    try:
        old = _result_keys(config_from_dict(read_toml(cfg_file)))
    except ConfigError:
        old = {"<unreadable config.toml>": True}
    new = _result_keys(cfg)
    if "" in (old.get(UNRECORDED), new.get(UNRECORDED)):  # a config written before the run chose it
        old.pop(UNRECORDED, None), new.pop(UNRECORDED, None)
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def describe_difference(diff: list[tuple[str, Any, Any]], there: str = "there", now: str = "now") -> str:
    """'KEY: A there, B now' for the first of ``config_difference``'s rows, and how many more."""
    k, a, b = diff[0]
    return f"{k}: {a!r} {there}, {b!r} {now}" + (f", and {len(diff) - 1} more" if len(diff) > 1 else "")


def clear(out: Path) -> None:
    """Delete a run's files (and its TensorBoard events), nothing else in ``out``."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for folder in (TENSORBOARD, HISTORY, SNAPSHOTS):
        if (out / folder).exists():
            shutil.rmtree(out / folder)


def remove_history(out: Path) -> None:
    """Drop the history files of a finished run (its npz files hold the histories now)."""
    shutil.rmtree(Path(out) / HISTORY, ignore_errors=True)


def history_reference(names: list[str], epochs: int) -> dict[str, np.ndarray]:
    """What an npz of a run in progress holds in place of its histories: their names and valid rows."""
    return {HISTORY_NAMES: np.array(names, dtype=str), HISTORY_EPOCHS: np.array(epochs)}


def run_state(cfg: Config, force: bool = False) -> str:
    """'fresh', 'resume', 'done' or 'replace' (forced over another run: clear it once ready) for
    ``cfg.out``. Refuses a run of another config, or run files without a config.toml, unless forced.
    Deletes nothing: the caller clears a replaced run only when the new one is ready to start."""
    out = Path(cfg.out)
    cfg_file = out / CONFIG
    if cfg_file.exists():
        diff = config_difference(cfg, cfg_file)
    else:
        present = [n for n in (*RUN_FILES, TENSORBOARD, HISTORY) if (out / n).exists()]
        diff = [("config.toml", "missing beside " + ", ".join(present), "this run")] if present else []
    if diff:
        if force:
            return "replace"
        raise RunError(
            f"run: {out} holds a run with another config ({describe_difference(diff)}); "
            "choose another out=, or --force to replace it"
        )
    changed = changed_inputs(cfg, out)
    if changed:
        if force:
            return "replace"
        k, path = changed[0]
        raise RunError(
            f"run: {k}={path} has changed since the run in {out} started (its content hash differs); "
            "restore that file, or train into another out= (--force replaces the run)"
        )
    if (out / SUMMARY).exists() and _valid_summary(out):
        return "done"
    if (out / CHECKPOINT).exists():
        return "resume"  # a damaged summary.json is rebuilt from the checkpoint
    return "fresh"


def _valid_summary(out: Path) -> bool:
    try:
        return read_summary(out) is not None
    except RunError:
        return False


def write_config(run: str | Path, cfg: Config) -> None:
    """config.toml, and inputs.json: the content hash of every input file the config names."""
    write_json(Path(run) / INPUTS, input_hashes(cfg))
    write_text(Path(run) / CONFIG, cfg.to_toml())


def input_hashes(cfg: Config) -> dict[str, str]:
    """sha256 of the files behind data.path, data.exclude and train.init (a run folder: its
    checkpoint; a folder of images: its file names and sizes); keys left empty are skipped."""
    flat = _flat(cfg.to_dict())
    out = {}
    for key in INPUT_KEYS:
        value = flat[key]
        if value and value != "scratch":
            out[key] = _content_hash(Path(value).expanduser())
    return out


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    target = path / CHECKPOINT if (path / CHECKPOINT).is_file() else path
    try:
        if target.is_dir():
            for f in sorted(p for p in target.rglob("*") if p.is_file()):
                digest.update(f"{f.relative_to(target)}\0{f.stat().st_size}\0".encode())
        else:
            with open(target, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    except OSError:
        return "unreadable"
    return digest.hexdigest()


def changed_inputs(cfg: Config, out: Path) -> list[tuple[str, str]]:
    """(key, path) of every input whose content differs from what the run in ``out`` recorded."""
    try:
        recorded = loads_json((out / INPUTS).read_text())
    except (OSError, ValueError):
        return []  # a run of an older memgate: nothing recorded to compare
    if not isinstance(recorded, dict):
        return []
    now = input_hashes(cfg)
    flat = _flat(cfg.to_dict())
    return [(k, flat[k]) for k in INPUT_KEYS if k in recorded and recorded[k] != now.get(k)]


def snapshot_path(run: str | Path, epoch: int) -> Path:
    """Where the network's weights after ``epoch`` (1-based) are kept (``train.snapshot_every``)."""
    return Path(run) / SNAPSHOTS / f"epoch{epoch:03d}.pt"


def snapshot_epochs(run: str | Path) -> list[int]:
    """The epochs (1-based, increasing) whose weights the run kept in snapshots/."""
    folder = Path(run) / SNAPSHOTS
    names = [p.name for p in folder.glob("epoch*.pt")] if folder.is_dir() else []
    return sorted(int(n[5:-3]) for n in names if n[5:-3].isdigit())


def write_metrics(run: str | Path, rows: list[dict]) -> None:
    write_text(Path(run) / METRICS, "".join(json.dumps(sanitize(r), allow_nan=False) + "\n" for r in rows))


def read_metrics(run: str | Path) -> list[dict]:
    """metrics.jsonl's rows, each checked against ``schema.METRICS_ROW``, epochs 1, 2, ... in order."""
    path = Path(run) / METRICS
    if not present(run, METRICS):
        return []
    remedy = "the file is damaged; run `memgate train` on the run again to rewrite it from the checkpoint"
    try:
        text = _own_file(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"run: cannot read {path} ({e.__class__.__name__}); {remedy}") from None
    rows = []
    for i, line in enumerate((x for x in text.splitlines() if x.strip()), 1):
        try:
            row = loads_json(line)
            schema.check_metrics_row(row)
        except ValueError as e:  # JSONDecodeError and SchemaError
            raise RunError(f"run: {path}, line {i}{schema.problem(e)}; {remedy}") from None
        if row["epoch"] != i:
            raise RunError(f"run: {path}: line {i} is epoch {row['epoch']}, expected {i}; {remedy}")
        rows.append(row)
    return rows


def _own_file(path: Path) -> Path:
    """``path`` itself, refused if it is a link (a run's files are its own, never followed elsewhere)."""
    if path.is_symlink():
        raise RunError(f"run: {path} is a symbolic link; memgate reads a run's own files only (copy the file in)")
    return path


def write_summary(run: str | Path, summary: dict[str, Any]) -> None:
    write_json(Path(run) / SUMMARY, summary)


def read_summary(run: str | Path) -> dict[str, Any] | None:
    """The finished run's summary (checked against ``schema.SUMMARY``), or None while it is unfinished."""
    remedy = f"delete it and run `memgate train -c {Path(run) / CONFIG}` to rebuild it from the checkpoint"
    return _read_json(Path(run) / SUMMARY, schema.SUMMARY, remedy)


SCHEMAS = {OOD: schema.OOD, TRADEOFF: schema.check_tradeoff, DETECTION: schema.DETECTION}


def read_analysis(run: str | Path, name: str, command: str) -> dict[str, Any] | None:
    """A result that ``memgate <command>`` wrote into the run (``OOD``, ``TRADEOFF``, ``DETECTION``), or
    None if absent."""
    return _read_json(Path(run) / name, SCHEMAS[name], f"run `memgate {command}` again")


def _read_json(path: Path, spec: Any, remedy: str) -> dict[str, Any] | None:
    """The JSON object in ``path`` checked against ``spec`` (a schema, or a function that checks)."""
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        result = loads_json(_own_file(path).read_text())
        spec(result) if callable(spec) else schema.check(result, spec)
    except (OSError, ValueError) as e:  # unreadable, not JSON, or breaks the schema
        raise RunError(f"run: {path}{schema.problem(e)}; {remedy}") from None
    return result


def present(run: str | Path, name: str) -> bool:
    """Whether the run has file ``name``; a link counts (a dangling or looping one too), so that its
    reader refuses it in one line instead of the run looking as if it had no such file."""
    path = Path(run) / name
    return path.exists() or path.is_symlink()


def is_finished(run: str | Path) -> bool:
    return (Path(run) / SUMMARY).exists()


def write_gates(run: str | Path, arrays: dict[str, np.ndarray]) -> None:
    write_atomic(Path(run) / GATES, lambda f: np.savez(f, **arrays))


def write_signals(run: str | Path, arrays: dict[str, np.ndarray]) -> None:
    write_atomic(Path(run) / SIGNALS, lambda f: np.savez(f, **arrays))


def read_gates(run: str | Path) -> dict[str, np.ndarray]:
    """Every array of a run's gates.npz (or of the .npz file given)."""
    return read_arrays(run, GATES)


def read_signals(run: str | Path) -> dict[str, np.ndarray]:
    """Every array of a run's signals.npz: per-sample training signals (see train/signals.py)."""
    return read_arrays(run, SIGNALS)


def read_run_arrays(run: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """(signals, gates or None for an ungated run): both files checked to describe the same samples."""
    signals = read_signals(run)
    if not present(run, GATES):
        return signals, None
    gates = read_gates(run)
    try:
        schema.check_same_samples(signals, gates)
    except schema.SchemaError as e:
        raise RunError(f"run: {run}: {e}; the files are damaged: {_remedy(Path(run) / SIGNALS)}") from None
    return signals, gates


def _remedy(path: Path) -> str:
    """How to repair a damaged gates.npz / signals.npz: an unfinished run rewrites it from its
    checkpoint and history/; a finished run's histories live only in these files."""
    if (path.parent / SUMMARY).exists():
        return (
            "the run is finished, so its per-sample histories exist only in this file: restore it from a copy, "
            "or retrain the run (memgate train --force)"
        )
    return "run `memgate train` on the run again to rewrite it from the checkpoint"


def read_arrays(run: str | Path, name: str) -> dict[str, np.ndarray]:
    path = Path(run)
    if path.is_dir():
        path = path / name
    _own_file(path)
    try:
        bad = oversized_member(path)
        if bad:
            raise RunError(f"run: {path}: {bad}; the file is damaged or crafted: {_remedy(path)}")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        what = "not a gated run, or " if name == GATES else "a run of an older memgate, or "
        raise RunError(f"run: {path} not found ({what}no epoch finished yet)") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise RunError(f"run: {path} is damaged ({e.__class__.__name__}): {_remedy(path)}") from None
    if HISTORY_NAMES in arrays:
        _join_history(arrays, path)
    try:
        schema.check_run_arrays(arrays, "gates" if name == GATES else "signals")
    except schema.SchemaError as e:
        raise RunError(f"run: {path}: {e}; the file is damaged: {_remedy(path)}") from None
    return arrays


def _join_history(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Replace an npz's history reference by the rows it names (a run still training)."""
    from .history import read_rows

    names, epochs = arrays.pop(HISTORY_NAMES), arrays.pop(HISTORY_EPOCHS, None)
    if names.ndim != 1 or names.dtype.kind != "U" or epochs is None or epochs.shape != () or epochs.dtype.kind != "i":
        raise RunError(f"run: {path} has a damaged history reference; run `memgate train` on the run again")
    for name in names.tolist():
        if not name.replace("_", "").isalnum():
            raise RunError(f"run: {path} names a history {name!r} that no run writes")
        arrays[name] = read_rows(path.parent / HISTORY / f"{name}.npy", int(epochs))
