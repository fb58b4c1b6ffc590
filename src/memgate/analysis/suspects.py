"""Use the detector: export the N most suspicious training samples, as a table and as images.

suspects.csv lists dataset indices first, so it can be handed straight to ``data.exclude`` for a
retrain without them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..atomic import write_text
from ..errors import ConfigError, MemgateError
from ..train.evaluate import run_dataset
from .figures import image_grid


def default_score(score_map: dict[str, np.ndarray]) -> str:
    """g of the deepest gate at the last epoch for a gated run (the paper's claim), else -AUM."""
    gs = sorted(k for k in score_map if k.startswith("g_final_b"))
    return gs[-1] if gs else "neg_aum"


def check_by(score_map: dict[str, np.ndarray], by: str | None) -> str:
    """The score ranking the suspects: ``by``, or the default; a one-line error for an unknown one."""
    by = by or default_score(score_map)
    if by not in score_map:
        raise ConfigError(f"analyze: --by {by} is not a score of this run (choose from {', '.join(sorted(score_map))})")
    return by


def write_suspects(
    run: Path,
    out_dir: Path,
    signals: dict[str, np.ndarray],
    score_map: dict[str, np.ndarray],
    count: int,
    by: str | None,
) -> list[str]:
    by = check_by(score_map, by)
    if count < 1:
        raise ConfigError(f"analyze: --suspects {count} must be at least 1")
    order = np.argsort(-score_map[by], kind="stable")[:count]
    noisy_known = bool(signals["noisy"].any())
    try:
        ds, why = run_dataset(run), ""
    except MemgateError as e:  # the table stands without the images, paths and class names
        ds, why = None, str(e)
    rows = _rows(signals, score_map, by, order, noisy_known, ds)
    buf = io.StringIO()
    w = csv.DictWriter(buf, list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(out_dir / "suspects.csv", buf.getvalue())
    lines = [f"  suspects: the {len(order):,d} highest by {by} in {out_dir / 'suspects.csv'}"]
    if noisy_known:
        lines[0] += f" ({sum(r['noisy'] for r in rows):,d} of them have an injected wrong label)"
    if ds is None:
        lines.append(f"  (no suspects.png: {why})")
        return lines
    _plot(ds.x_train, list(ds.classes), rows, by, out_dir / "suspects.png")
    lines.append(f"  suspects.png: the first {min(64, len(rows))} of them")
    return lines


def _rows(signals, score_map, by, order, noisy_known, ds) -> list[dict]:
    """One row per suspect, each column once: the dataset index (and, for image folders, the file),
    the given and predicted label (and their class names), the ranking score, then g, the final
    loss and AUM unless the ranking score is one of them."""
    probs = signals.get("probs_final")
    gkey = sorted(k for k in score_map if k.startswith("g_final_b"))
    classes = list(ds.classes) if ds is not None else []
    paths = ds.train_paths if ds is not None else ()
    rows = []
    for pos in order:
        idx, label = int(signals["indices"][pos]), int(signals["labels"][pos])
        pred = int(probs[pos].argmax()) if probs is not None else None
        row: dict = {"index": idx}
        if paths:
            row["path"] = paths[idx]
        row["label"] = label
        if classes:
            row["label_name"] = classes[label]
        row["predicted"] = pred if pred is not None else ""
        if classes:
            row["predicted_name"] = classes[pred] if pred is not None else ""
        row[by] = float(score_map[by][pos])
        if gkey and by != gkey[-1]:
            row["g"] = float(score_map[gkey[-1]][pos])
        if by != "loss_final":
            row["loss"] = float(signals["loss"][-1, pos])
        if by != "neg_aum":
            row["aum"] = float(signals["margin"][:, pos].astype(np.float32).mean())
        if noisy_known:
            row["noisy"] = int(signals["noisy"][pos])
            row["clean_label"] = int(signals["clean_labels"][pos])
        rows.append(row)
    return rows


def _plot(images: np.ndarray, classes: list[str], rows: list[dict], by: str, png: Path) -> None:
    shown = rows[:64]
    titles = [
        f"#{r['index']} {classes[r['label']]}\npred {classes[r['predicted']] if r['predicted'] != '' else '?'}"
        for r in shown
    ]
    title = f"most suspicious training samples by {by} (given label, prediction; red: injected wrong label)"
    image_grid([images[r["index"]] for r in shown], titles, [bool(r.get("noisy")) for r in shown], png, title, 6)
