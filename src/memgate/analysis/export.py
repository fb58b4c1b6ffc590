"""`memgate scores RUN -o DIR`: the trained network's per-sample scores, for others to check.

The final network, in eval mode and without augmentation, on every training sample of the run
(its given labels) and on the test split: ``train_scores.npz`` and ``test_scores.npz``, rows in
dataset-index order, with ``indices``, ``labels``, ``correct`` (bool: the argmax is the label) and
float16 ``g_b<s>`` (each gate), ``loss`` and ``margin`` (for the given label) and ``max_softmax``;
the training file adds the run's histories (signals.npz): ``loss_last_pass``, ``neg_aum``,
``forgetting``, ``csl`` and ``el2n``.
``scores.md``: Spearman of the final g with the loss, -AUM and forgetting events of the training
passes (signals.npz) and with any ``--scores`` file (such as the loss of an ungated run of the same
seed: ``its/train_scores.npz:loss``), over all training samples and within each class, which says
what g ranks; and on the test split, which the network never fitted, how well g flags its errors
(AUROC) beside its own confidence (1 - max softmax). ``g_by_class.png``: per class, the training
images with the highest and the lowest g. An ungated run gets the same files without g (its
scores are what a gated run's g is set beside) and its confidence on the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from ..atomic import write_atomic, write_text
from ..data import make_split
from ..errors import DataError, RunError
from ..markdown import table
from ..outputs import claim, record, run_folder
from ..train.evaluate import SavedRun, open_run, predict
from ..train.rundir import SIGNALS, present, read_signals, snapshot_epochs, snapshot_path
from .depth import depth_study
from .detection import forgetting_events
from .external import read_external, score_source, within_class_spearman
from .figures import image_grid
from .metrics import auroc

PER_CLASS = 4  # images per class and end (highest, lowest g) in g_by_class.png


def per_sample(logits: torch.Tensor, g: dict[int, torch.Tensor], labels: np.ndarray) -> dict[str, np.ndarray]:
    """float16 scores per image: g of each gate, loss and margin for ``labels``, max softmax."""
    z = logits.double()
    y = torch.from_numpy(labels.astype(np.int64))
    logp = torch.log_softmax(z, 1)
    given = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], -torch.inf).amax(1)
    out = {f"g_b{s}": v.numpy() for s, v in g.items()}
    out.update(
        loss=(-logp.gather(1, y[:, None]).squeeze(1)).numpy(),
        margin=(given - other).numpy(),
        max_softmax=logp.exp().amax(1).numpy(),
    )
    scores = {k: v.astype(np.float16) for k, v in out.items()}
    scores["correct"] = (z.argmax(1) == y).numpy()  # the network's own call: a tie goes to the first class
    return scores


def export_scores(
    run: str | Path,
    out: str | Path | None = None,
    force: bool = False,
    proxies: bool = False,
    probes: int = 2,
    snapshots: tuple[int, ...] | None = None,
    external: tuple[str | Path, ...] = (),
    partial: bool = False,
) -> str:
    """Write train_scores.npz, test_scores.npz, scores.md and (gated) g_by_class.png for a finished run;
    with ``proxies`` also prediction depth, input-loss curvature (``probes`` Rademacher probes) and
    loss sensitivity, averaged over the run's snapshots where it kept them (those of the epochs
    ``snapshots``, where given) and the final network (analysis/proxies.py), and
    for a gated run the study of g against them (analysis/depth.py: proxies.md, spearman.png,
    g_by_depth.png). ``external`` score files (``FILE`` holding ``scores``, or ``FILE.npz:KEY``; see
    ``external_names``) are set beside g in both; ``partial``: they may cover some samples."""
    r = _finished_run(run)
    gated = bool(r.cfg.model.gates)
    if snapshots is not None and not proxies:
        raise RunError("scores: --snapshots chooses what the proxies average over; add --proxies")
    if external and not gated:
        raise RunError(f"scores: --scores sets files beside g, and {run} has no gate; drop --scores for this run")
    split = make_split(r.dataset, r.cfg.data)
    order = np.argsort(split.train_idx)  # dataset-index order
    idx, labels = split.train_idx[order], split.train_labels[order]
    signals = _run_signals(run, split)
    ext = {name: read_external(arg, idx, (labels,), partial=partial) for name, arg in external_names(external).items()}
    epochs = _averaged_epochs(run_folder(run), r.cfg.train.epochs, snapshots) if proxies else []
    out_dir = claim(out or run_folder(run), run, "scores", force)
    sets = {
        "train": (idx, labels, r.dataset.x_train[idx]),
        "test": (np.arange(len(r.dataset.y_test)), r.dataset.y_test, r.dataset.x_test),
    }
    lines = [f"{run}: per-sample scores of the final network (eval mode, no augmentation)"]
    extra: dict[str, dict[str, np.ndarray]] = {"train": {}, "test": {}}
    if proxies:
        extra, more = _proxies(r, run_folder(run), sets, probes, epochs)
        lines += more
    if signals is not None:
        extra["train"].update(history_proxies(signals, order))
    result = {}
    for name, (ind, lab, x) in sets.items():
        o = predict(r, x)
        arrays = {"indices": ind, "labels": lab.astype(np.int16), **per_sample(o.logits, o.g, lab), **extra[name]}
        write_atomic(out_dir / f"{name}_scores.npz", lambda f, a=arrays: np.savez(f, **a))
        result[name] = arrays
        lines.append(f"  {name}_scores.npz: {len(ind):,d} images")
    if gated:
        lines += _gated_reports(r, result, ext, proxies, out_dir)
    else:
        write_text(out_dir / "scores.md", UNGATED + test_split_table(result["test"], None))
        lines.append(f"  scores.md: the test errors its max softmax flags (no gate, so no g), in {out_dir}")
        if proxies:
            lines.append("  no gate, so no proxies.md (g against the proxies): the proxies are in the files")
    record(out_dir, run, "scores")
    return "\n".join(lines)


def _gated_reports(r: SavedRun, result: dict, ext: dict, proxies: bool, out_dir: Path) -> list[str]:
    """scores.md, g_by_class.png and (``proxies``) the study of g against the proxies."""
    stage = max(r.cfg.model.gates)
    text = _spearman_table(result["train"], stage, ext) + test_split_table(result["test"], stage)
    write_text(out_dir / "scores.md", text)
    _grid(result["train"], r.dataset.x_train, list(r.dataset.classes), stage, out_dir / "g_by_class.png")
    lines = [
        "  scores.md: what g ranks (Spearman with loss, -AUM, forgetting; the test errors it flags)",
        f"  g_by_class.png, in {out_dir}",
    ]
    if proxies:
        lines += depth_study(r, result["train"], result["test"], ext, out_dir)
    return lines


UNGATED = """# Scores of an ungated network

This run has no gate, so its files hold no g: its loss, margin, max softmax (and the proxies) are
what a gated run's g is set beside, e.g. `memgate scores GATED_RUN --scores DIR/train_scores.npz:loss`.
"""


def external_names(args: tuple[str | Path, ...]) -> dict[str, str | Path]:
    """Each ``--scores`` argument by the name its row gets: a file's stem, or ``FOLDER/STEM:KEY`` for
    one array of an .npz (``score_source``). Two arguments of one name are refused."""
    out: dict[str, str | Path] = {}
    for arg in args:
        path, key = score_source(arg)
        name = path.stem if key == "scores" else f"{path.parent.name}/{path.stem}:{key}"
        if name in out:
            raise DataError(f"scores: two --scores files would both be named {name!r}; rename one of them")
        out[name] = arg
    return out


def _finished_run(run: str | Path) -> SavedRun:
    r = open_run(run)
    done, epochs = r.ckpt.get("epoch"), r.cfg.train.epochs
    if done != epochs:
        raise RunError(
            f"scores: {run} is not finished (epoch {done} of {epochs}); these would not be the final network's "
            "scores: finish it with memgate train first"
        )
    return r


def _run_signals(run: str | Path, split) -> dict[str, np.ndarray] | None:
    """The run's signals.npz, checked to describe its training split (None where it has none)."""
    signals = read_signals(run_folder(run)) if present(run_folder(run), SIGNALS) else None
    if signals is not None and not (
        np.array_equal(signals["indices"], split.train_idx) and np.array_equal(signals["labels"], split.train_labels)
    ):
        raise RunError(
            f"scores: {run_folder(run) / SIGNALS} describes other samples than the run's training split; "
            "the file is damaged or from another run: restore it from a copy"
        )
    return signals


PROXY_NAMES = {  # scores.md's names for the proxies a train_scores.npz may hold, as their papers name them
    "loss_last_pass": "loss (final training pass)",
    "neg_aum": "-AUM",
    "forgetting": "forgetting events",
    "prediction_depth": "prediction depth (Baldock et al. 2021)",
    "curvature": "input-loss curvature (Garg et al. 2024)",
    "loss_sensitivity": "loss sensitivity (input-gradient norm)",
    "el2n": "EL2N (Paul et al. 2021)",
    "csl": "CSL, cumulative training loss (Ravikumar et al. 2025)",
}


def history_proxies(signals: dict[str, np.ndarray], order: np.ndarray) -> dict[str, np.ndarray]:
    """From the training passes' histories, in dataset-index order (``order`` sorts the split's
    columns): the loss of the last pass, -AUM (the mean margin's negative), forgetting events, the
    cumulative training loss, and EL2N at 10% of training (Paul et al.'s epoch 20 of 200), where the
    run recorded it."""
    out = {
        "loss_last_pass": signals["loss"][-1][order].astype(np.float32),
        "neg_aum": (-signals["margin"].astype(np.float64).mean(0))[order].astype(np.float32),
        "forgetting": forgetting_events(signals["correct"])[order].astype(np.int16),
        "csl": signals["loss"].astype(np.float64).sum(0)[order].astype(np.float32),
    }
    if "el2n" in signals:
        epochs = len(signals["el2n"])
        out["el2n"] = signals["el2n"][max(1, round(0.1 * epochs)) - 1][order].astype(np.float32)
    return out


def _averaged_epochs(folder: Path, final: int, chosen: tuple[int, ...] | None) -> list[int]:
    """The snapshots the proxies average over beside the final network: ``chosen``, else every kept one;
    the final epoch's snapshot is the final network itself."""
    kept = snapshot_epochs(folder)
    missing = sorted(set(chosen or ()) - set(kept))
    if missing:
        raise RunError(
            f"scores: --snapshots {missing[0]}: {folder} kept no snapshot of that epoch "
            f"(kept: {', '.join(map(str, kept)) or 'none'}); choose among those"
        )
    return [e for e in (sorted(set(chosen)) if chosen else kept) if e != final]


def _proxies(
    r, folder: Path, sets: dict, probes: int, epochs: list[int]
) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    from .proxies import run_proxies

    final = r.cfg.train.epochs
    found, cost = run_proxies(
        r,
        {k: (x, lab) for k, (_, lab, x) in sets.items()},
        probes,
        [snapshot_path(folder, e) for e in epochs],
        progress=True,
    )
    n = sum(len(v[0]) for v in sets.values())
    lines = [
        f"  proxies: prediction depth {cost['prediction_depth']:.0f} s, curvature ({probes} probes) and loss "
        f"sensitivity {cost['curvature_and_sensitivity']:.0f} s for {n:,d} images x {len(epochs) + 1} network(s)"
    ]
    if epochs:
        lines.append(
            f"  curvature and loss sensitivity averaged over the snapshots of epochs {epochs} and the final network "
            f"(epoch {final})"
        )
    else:
        lines.append(
            f"  no snapshots before the final epoch (trained with train.snapshot_every={r.cfg.train.snapshot_every}): "
            "curvature and loss sensitivity of the final network only, not averaged over training"
        )
    return found, lines


def _spearman_table(
    train: dict[str, np.ndarray], stage: int, external: dict[str, tuple[np.ndarray, np.ndarray]]
) -> str:
    """Spearman of the final g with the final network's loss, every history and proxy the scores hold
    (the training passes' loss, -AUM, forgetting where the run has signals.npz) and every ``external``
    score (name -> (positions in ``train``, scores), on the samples it covers), overall and within class."""
    g = train[f"g_b{stage}"].astype(np.float64)
    other = {label: train[key].astype(np.float64) for key, label in PROXY_NAMES.items() if key in train}
    other["loss (final network, eval)"] = train["loss"].astype(np.float64)
    for name, (pos, v) in external.items():
        other[name] = np.full(len(g), np.nan)
        other[name][pos] = v
    rows = []
    for name, v in other.items():
        m = np.isfinite(v)
        w = within_class_spearman(g[m], v[m], train["labels"][m])
        span = list(w["per_class"].values())
        rows.append(
            [
                name if m.all() else f"{name} ({m.sum():,d} samples)",
                f"{spearmanr(g[m], v[m]).statistic:+.3f}",
                "-" if w["mean"] is None else f"{w['mean']:+.3f}",
                f"{min(span):+.3f} .. {max(span):+.3f}" if span else "-",
            ]
        )
    head = ["score", "Spearman with g (all samples)", "within class (mean)", "within class (range)"]
    lines = [f"# What g ranks (gate over B{stage}, {len(g):,d} training samples)", ""]
    return "\n".join(lines + table(head, rows) + [""])


def test_split_table(test: dict[str, np.ndarray], stage: int | None) -> str:
    """On the test split: Spearman of g (of no gate for ``stage`` None) and of 1 - max softmax with the
    loss, and the AUROC of each for the final network's errors, with its distance from chance in
    standard errors (Hanley and McNeil's null standard error for these counts). Errors are
    ``correct == 0`` (the network's argmax); files written before memgate stored ``correct`` count
    margin < 0, which scores a tie between the label's logit and another's (margin 0, frequent with
    bf16 logits) as correct, and say so."""
    loss = test["loss"].astype(np.float64)
    if "correct" in test:
        wrong, note = test["correct"] == 0, ""
    else:
        wrong = test["margin"].astype(np.float64) < 0
        ties = int((test["margin"] == 0).sum())
        note = f"; errors read as margin < 0, so {ties:,d} ties at margin 0 count as correct (a file without `correct`)"
    n1, n0 = int(wrong.sum()), int((~wrong).sum())
    se = np.sqrt((n1 + n0 + 1) / (12 * max(n1, 1) * max(n0, 1)))
    scores = {"1 - max softmax": 1 - test["max_softmax"].astype(np.float64)}
    if stage is not None:
        scores = {f"g (B{stage})": test[f"g_b{stage}"], **scores}
    rows = []
    for name, v in scores.items():
        a = auroc(v, wrong)
        rows.append([name, f"{spearmanr(v, loss).statistic:+.3f}", f"{a:.3f}", f"{(a - 0.5) / se:+.1f}"])
    lines = [
        "",
        f"## On the test split ({len(loss):,d} images, {n1:,d} misclassified by the final network{note})",
        "",
    ]
    head = ["score", "Spearman with the loss", "AUROC for the errors", "AUROC - 0.5 in standard errors"]
    return "\n".join(lines + table(head, rows) + [""])


def _grid(train: dict[str, np.ndarray], images: np.ndarray, classes: list[str], stage: int, png: Path) -> None:
    g, loss = train[f"g_b{stage}"].astype(np.float32), train["loss"].astype(np.float32)
    picks, titles = [], []
    for c, name in enumerate(classes[:10]):
        members = np.flatnonzero(train["labels"] == c)
        ranked = members[np.lexsort((loss[members], g[members]))]  # by g; float16 ties by the loss
        for end, chosen in (("high", ranked[::-1][:PER_CLASS]), ("low", ranked[:PER_CLASS])):
            picks += list(chosen)
            titles += [f"{name} {end}\ng={g[i]:.3f}" for i in chosen]
    imgs = [images[train["indices"][i]] for i in picks]
    title = (
        f"per class: the {PER_CLASS} training images with the highest g, then the {PER_CLASS} with the lowest "
        "(equal g, as stored in float16: ordered by the loss)"
    )
    image_grid(imgs, titles, [False] * len(imgs), png, title)
