"""The schema of memgate's run files: summary.json and metrics.jsonl of a run, the ood.json and
tradeoff.json that `memgate ood` / `memgate tradeoff` write into it, a grid's grid.json, and the
arrays of gates.npz and signals.npz (``check_run_arrays``: shapes, dtypes, ranges).

A JSON schema is a plain value: a ``Field`` (a number within bounds, an int, a string, a bool; ``None``
allowed or not), a dict of key -> schema (every key required unless its name ends in ``?``; keys
not named are allowed), ``[schema]`` (a list of them) or ``Each(schema)`` (a dict of any keys, each
value of that schema); ``Opt(schema)`` is None or that. ``check`` walks a decoded
file and raises ``SchemaError`` naming the first field that breaks it; the readers
(``train/rundir.py``, ``experiments/report.py``) turn it into the one-line error naming the file,
the field and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


class SchemaError(ValueError):
    """``field`` (a dotted path) of a file breaks its schema: ``problem`` says how."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field or 'the content'} {problem}")
        self.field, self.problem = field, problem


def problem(e: Exception) -> str:
    """How a file broke, to append to its path: ': <field> <problem>' or ' is damaged (<error>)'."""
    return f": {e}" if isinstance(e, SchemaError) else f" is damaged ({e.__class__.__name__})"


@dataclass(frozen=True)
class Field:
    kind: str  # "num" (int or float), "int", "str" or "bool"
    lo: float = -math.inf
    hi: float = math.inf
    null: bool = False  # None allowed

    def check(self, value: Any, where: str) -> None:
        if value is None:
            if not self.null:
                raise SchemaError(where, "is missing (null)")
            return
        if self.kind == "str":
            if not isinstance(value, str):
                raise SchemaError(where, f"must be a string, not {type(value).__name__}")
            return
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise SchemaError(where, f"must be true or false, not {value!r:.40}")
            return
        ok = int if self.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok):
            raise SchemaError(where, f"must be {'an integer' if self.kind == 'int' else 'a number'}, not {value!r:.40}")
        if not (math.isfinite(value) and self.lo <= value <= self.hi):
            raise SchemaError(where, f"is {value!r}, outside [{self.lo:g}, {self.hi:g}]")


@dataclass(frozen=True)
class Opt:
    """``None`` or a value of ``schema`` (for lists and mappings; a Field has ``null``)."""

    schema: Any


@dataclass(frozen=True)
class Each:
    """A dict whose every value follows ``schema`` (keys are names: sources, stages, batch sizes)."""

    schema: Any


def check(value: Any, schema: Any, where: str = "") -> None:
    """Raise SchemaError at the first place ``value`` breaks ``schema`` (see the module docstring)."""
    if isinstance(schema, Field):
        schema.check(value, where)
    elif isinstance(schema, Opt):
        if value is not None:
            check(value, schema.schema, where)
    elif isinstance(schema, Each):
        if not isinstance(value, dict):
            raise SchemaError(where, f"must be a mapping, not {type(value).__name__}")
        for k, v in value.items():
            check(v, schema.schema, f"{where}.{k}" if where else str(k))
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise SchemaError(where, f"must be a list, not {type(value).__name__}")
        for i, v in enumerate(value):
            check(v, schema[0], f"{where}[{i}]")
    else:
        if not isinstance(value, dict):
            raise SchemaError(where, f"must be a mapping, not {type(value).__name__}")
        for key, sub in schema.items():
            name = key.removesuffix("?")
            at = f"{where}.{name}" if where else name
            if name in value:
                check(value[name], sub, at)
            elif not key.endswith("?"):
                raise SchemaError(at, "is missing")


NUM, INT, STR, BOOL = Field("num"), Field("int"), Field("str"), Field("bool")
SHARE = Field("num", 0, 1)  # an accuracy, a mean g, a fraction of samples
OPT_SHARE, OPT_NUM = Field("num", 0, 1, null=True), Field("num", null=True)
COUNT, EPOCH = Field("int", 0), Field("int", 1)
SECONDS = Field("num", 0)

# summary.json (train/log.py run_summary): written last, its presence means "finished"
SUMMARY = {
    "epochs": EPOCH,
    "final_test_acc": SHARE,
    "final_val_acc": OPT_SHARE,
    "best_val_acc": OPT_SHARE,
    "best_val_epoch": Field("int", 1, null=True),
    "test_acc_at_best_val": OPT_SHARE,
    "final_g_mean": OPT_SHARE,
    "final_frac_g_above_half": OPT_SHARE,
    "memorised_final?": OPT_SHARE,
    "memorised_50_epoch?": Field("int", 1, null=True),
    "memorised_90_epoch?": Field("int", 1, null=True),
    "train_time_s": SECONDS,
    "dataset": STR,
    "n_train": EPOCH,
    "noisy_train": COUNT,
    "precision?": STR,
    "params_total": COUNT,
    "params_gate": COUNT,
    "macs": EPOCH,
    "macs_skippable": COUNT,
}

# one line of metrics.jsonl (train/log.py epoch_row); extra keys (g_mean_b2, ...) are numbers or null
METRICS_ROW = {
    "epoch": EPOCH,
    "lr": NUM,
    "train_loss": NUM,
    "train_acc": SHARE,
    "val_acc?": OPT_SHARE,
    "test_acc?": OPT_SHARE,
    "test_loss?": OPT_NUM,
    "g_mean?": OPT_SHARE,
    "frac_g_above_half?": OPT_SHARE,
    "test_g_mean?": OPT_SHARE,
    "train_acc_noisy?": OPT_SHARE,
    "train_acc_clean?": OPT_SHARE,
    "epoch_time_s": SECONDS,
}
METRICS_EXTRA = OPT_NUM

# ood.json (analysis/ood.py): per OOD source, per score, AUROC and FPR at 95% TPR
OOD = {"ood": Each({"n": EPOCH, "scores": Each({"auroc": SHARE, "fpr95?": OPT_SHARE})})}

# detection.json (analysis/detection.py): per score, AUROC etc. for the injected wrong labels, and
# per signal its AUROC at each epoch (null where undefined)
DETECTION = {
    "n": EPOCH,
    "n_noisy": COUNT,
    "scores": Each({"auroc": SHARE, "ap?": OPT_SHARE, "precision_at_k?": OPT_SHARE, "recall_at_k?": OPT_SHARE}),
    "auroc_per_epoch?": Each([OPT_SHARE]),
}

# tradeoff.json (analysis/tradeoff.py): the thresholds swept, the soft gate, the full network's speed
_POINT = {"tau": NUM, "test_acc": SHARE, "test_macs": Field("num", 0), "val_acc?": OPT_SHARE}
TRADEOFF = {
    "macs_full": EPOCH,
    "full_network": Each(Field("num", 0)),
    "soft_gate": {"test_acc": SHARE},
    "points": [_POINT],
    "references?": [
        {
            "label": STR,
            "run": STR,
            "test_acc": SHARE,
            "macs": Field("num", 0),
            "images_per_s?": Each(Field("num", 0)),  # timed beside the full network (older files: absent)
            "speedup?": Each(Field("num", 0)),
        }
    ],
    "note?": Field("str", null=True),  # e.g. why the timings are invalid ("" when none)
}
CHOSEN = {"tau": NUM, "test_acc": SHARE, "macs": Field("num", 0), "chosen_on?": STR}

# grid.json (experiments/sweep.py): the resolved grid a sweep ran
GRID = {
    "name": STR,
    "title?": Field("str", null=True),
    "seeds?": [INT],
    "baseline?": Field("str", null=True),
    "variants": [
        {
            "name": STR,
            "baseline?": Field("str", null=True),
            "overrides?": [STR],
            "paper?": Opt([Field("num", null=True)]),  # the paper's [mean, std] in %
        }
    ],
}


def check_metrics_row(row: Any) -> None:
    check(row, METRICS_ROW)
    for k, v in row.items():
        if k not in METRICS_ROW and f"{k}?" not in METRICS_ROW:
            check(v, METRICS_EXTRA, k)


def check_tradeoff(result: Any) -> None:
    """tradeoff.json: at least one point, and ``chosen`` null or a point (its tau among them)."""
    check(result, TRADEOFF)
    if not result["points"]:
        raise SchemaError("points", "is empty")
    chosen = result.get("chosen")
    if chosen is not None:
        check(chosen, CHOSEN, "chosen")
        if chosen["tau"] not in {p["tau"] for p in result["points"]}:
            raise SchemaError("chosen.tau", "is none of the points' thresholds")


# gates.npz / signals.npz (train/loop.py): the split fields say which sample each column is
SPLIT_FIELDS = ("indices", "labels", "clean_labels", "noisy")
HISTORY_PREFIXES = {"gates": ("g_b",), "signals": ("loss", "margin", "correct", "gate_loss_b", "gate_entropy_b")}
OPTIONAL_HISTORIES = {"gates": (), "signals": ("el2n",)}  # runs trained before it was recorded lack it
LABEL_FIELDS = ("labels", "clean_labels", "test_labels", "val_labels")


def check_run_arrays(arrays: dict[str, np.ndarray], kind: str) -> None:
    """The schema of gates.npz / signals.npz (``kind`` "gates" / "signals"): the split fields (1-D, N
    entries, indices unique and >= 0, labels >= 0, noisy bool); every history epochs x N float with
    the same epochs and a finite value in its last epoch; g within [0, 1], correct 0 or 1; softmax
    snapshots N x C, and then every label below C."""
    if missing := [k for k in SPLIT_FIELDS if k not in arrays]:
        raise SchemaError(missing[0], "is missing")
    n = len(arrays["indices"])
    for k in SPLIT_FIELDS:
        a = arrays[k]
        if a.ndim != 1 or len(a) != n:
            raise SchemaError(k, f"has shape {a.shape}, expected ({n},) like indices")
        if k == "noisy" and a.dtype != bool:
            raise SchemaError(k, f"is {a.dtype}, expected bool")
    for k in ("indices", *LABEL_FIELDS):
        if k in arrays and (arrays[k].ndim != 1 or arrays[k].dtype.kind not in "iu" or (arrays[k] < 0).any()):
            raise SchemaError(k, "must hold integers >= 0")
    if len(np.unique(arrays["indices"])) != n:
        raise SchemaError("indices", "repeats a dataset index")
    _check_histories(arrays, kind, n)
    for k in ("probs_final", "probs_before_drop"):
        if k in arrays and (arrays[k].ndim != 2 or len(arrays[k]) != n or arrays[k].dtype.kind != "f"):
            raise SchemaError(k, f"has shape {arrays[k].shape}, expected {n} x classes floats")
    if "probs_final" in arrays:
        classes = arrays["probs_final"].shape[1]
        for k in LABEL_FIELDS:
            if k in arrays and len(arrays[k]) and arrays[k].max() >= classes:
                raise SchemaError(k, f"holds class {arrays[k].max()}, but the softmax has {classes} classes")


def _check_histories(arrays: dict[str, np.ndarray], kind: str, n: int) -> None:
    if kind == "gates":
        stages = arrays.get("stages")
        if stages is None or stages.ndim != 1 or stages.dtype.kind not in "iu" or not set(stages.tolist()) <= {2, 3}:
            raise SchemaError("stages", "must list the gated stages (2 and/or 3)")
        required = [f"g_b{s}" for s in stages.tolist()]
    else:
        required = ["loss", "margin", "correct"]
    prefixes = HISTORY_PREFIXES[kind]
    histories = [k for k in arrays if k.startswith(prefixes) and k[-1].isdigit() and "_" in k]
    histories += [k for k in OPTIONAL_HISTORIES[kind] if k in arrays]
    epochs = None
    for k in dict.fromkeys([*required, *histories]):
        if k not in arrays:
            raise SchemaError(k, "is missing")
        a = arrays[k]
        if a.ndim != 2 or a.shape[1] != n or a.dtype.kind != "f" or len(a) == 0:
            raise SchemaError(k, f"has shape {a.shape} ({a.dtype}), expected epochs x {n} floats")
        if epochs is not None and len(a) != epochs:
            raise SchemaError(k, f"has {len(a)} epochs, the other histories {epochs}")
        epochs = len(a)
        if not np.isfinite(a[-1]).any():
            raise SchemaError(k, "has no finite value in its last epoch")
        if k.startswith("g_b") and (np.nanmin(a) < 0 or np.nanmax(a) > 1):
            raise SchemaError(k, "holds values outside [0, 1]")
        if k == "correct" and not np.isin(a[np.isfinite(a)], (0, 1)).all():
            raise SchemaError(k, "holds values other than 0 and 1")
        if k == "el2n" and (np.nanmin(a) < 0 or np.nanmax(a) > 1.5):  # |softmax - one-hot| <= sqrt(2)
            raise SchemaError(k, "holds values outside [0, sqrt(2)]")


def check_same_samples(signals: dict[str, np.ndarray], gates: dict[str, np.ndarray]) -> None:
    """signals.npz and gates.npz of one run: the same samples in the same order, the same epochs."""
    for k in SPLIT_FIELDS:
        if not np.array_equal(signals[k], gates[k]):
            raise SchemaError(k, "differs between signals.npz and gates.npz")
    g = next(k for k in gates if k.startswith("g_b"))
    if len(gates[g]) != len(signals["loss"]):
        raise SchemaError(g, f"has {len(gates[g])} epochs, signals.npz {len(signals['loss'])}")
