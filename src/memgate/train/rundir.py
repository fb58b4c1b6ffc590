"""The run directory's contract: its file names, its state (fresh, resume, done), and its files.

A run directory holds config.toml (the resolved config), metrics.jsonl (one strict-JSON line per
epoch), gates.npz (g of every training sample at every epoch), checkpoint.pt, tb/ (TensorBoard),
summary.json (written last: its presence means "finished") and g_hist.png. Every file is written
through ``memgate.atomic``; nothing else in memgate names these files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import sanitize, write_atomic, write_json, write_text
from ..config import Config, config_from_dict, read_toml
from ..errors import ConfigError, RunError

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
GATES = "gates.npz"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
G_HIST_PNG = "g_hist.png"
TENSORBOARD = "tb"
RUN_FILES = (CONFIG, METRICS, GATES, CHECKPOINT, SUMMARY, G_HIST_PNG)
NON_RESULT_KEYS = ("train.checkpoint_every_s",)  # keys that do not change what a run computes


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
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def clear(out: Path) -> None:
    """Delete a run's files (and its TensorBoard events), nothing else in ``out``."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    if (out / TENSORBOARD).exists():
        shutil.rmtree(out / TENSORBOARD)


def run_state(cfg: Config, force: bool = False) -> str:
    """'fresh', 'resume' or 'done' for ``cfg.out``; refuses a run of another config unless forced."""
    out = Path(cfg.out)
    cfg_file = out / CONFIG
    if cfg_file.exists():
        diff = config_difference(cfg, cfg_file)
        if diff:
            if not force:
                k, there, now = diff[0]
                raise RunError(
                    f"run: {out} holds a run with another config ({k}: {there!r} there, {now!r} now"
                    f"{f', and {len(diff) - 1} more' if len(diff) > 1 else ''}); "
                    "choose another out=, or --force to replace it"
                )
            clear(out)
            return "fresh"
        if (out / SUMMARY).exists():
            return "done"
        if (out / CHECKPOINT).exists():
            return "resume"
    return "fresh"


def write_config(run: str | Path, cfg: Config) -> None:
    write_text(Path(run) / CONFIG, cfg.to_toml())


def write_metrics(run: str | Path, rows: list[dict]) -> None:
    write_text(Path(run) / METRICS, "".join(json.dumps(sanitize(r), allow_nan=False) + "\n" for r in rows))


def read_metrics(run: str | Path) -> list[dict]:
    path = Path(run) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_summary(run: str | Path, summary: dict[str, Any]) -> None:
    write_json(Path(run) / SUMMARY, summary)


def read_summary(run: str | Path) -> dict[str, Any] | None:
    """The finished run's summary, or None while it is unfinished."""
    path = Path(run) / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None


def is_finished(run: str | Path) -> bool:
    return (Path(run) / SUMMARY).exists()


def write_gates(run: str | Path, arrays: dict[str, np.ndarray]) -> None:
    write_atomic(Path(run) / GATES, lambda f: np.savez(f, **arrays))


def read_gates(run: str | Path) -> dict[str, np.ndarray]:
    """Every array of a run's gates.npz (or of the .npz file given)."""
    path = Path(run)
    if path.is_dir():
        path = path / GATES
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
