"""`memgate holdout`: held-out memorisation scores from K trainings on random subsets.

The consistency score (C-score, Jiang et al. 2021) of a training sample is its expected accuracy
under networks trained on random subsets that leave it out; Feldman & Zhang's memorisation score
(2020) is the accuracy with the sample in training minus that without. Both are estimated here from
K networks, each trained with ``data.exclude`` = the samples it holds out:

- ``plan``: who holds out whom. ``--models K --ratio r``: every training sample is held out by
  exactly m = round(K * (1 - r)) of the K models (chosen at random per sample, so each model trains
  on about a share r of the split); ``--folds F``: a random partition into F folds, model k holds
  out fold k (every sample held out once: out-of-sample softmax for cleanlab, which asks for
  cross-validated ``pred_probs``). Writes ``plan.npz``, each model's held-out list and ``grid.toml``.
- ``run``: the K trainings through ``memgate sweep`` (resumable, shardable over machines with
  ``--shard I/N``, several at once with ``--jobs``); model k trains with seed + k.
- ``collect``: every finished model evaluated (no augmentation) on every training sample of the
  split, aggregated by dataset training index into ``holdout.npz``; the bookkeeping is checked
  (each model trained on exactly the complement of its held-out list).

holdout.npz (indexed like ``indices``, the split's dataset training indices): ``labels`` (given,
noisy where injected), ``clean_labels``, ``noisy``; ``heldout_count`` / ``in_count`` (uint8);
``cscore`` (mean held-out correctness), ``heldout_p_label`` (mean held-out p(given label)),
``heldout_loss``, ``in_correct`` (mean in-sample correctness), ``memorisation`` = in_correct -
cscore (float16); ``heldout_probs`` (N x C mean held-out softmax, float16); ``held_out`` (K x N
bool) and ``model_seeds``: the subsets, so the result can be rebuilt; ``scores`` = 1 - cscore
(float16; higher = more atypical), so that ``memgate analyze RUN --scores holdout.npz`` reads it as it is.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from scipy.stats import spearmanr

from ..analysis.detection import cleanlab_score
from ..analysis.metrics import auroc
from ..atomic import write_atomic, write_json, write_text
from ..config import load_config
from ..data import find_data, load_dataset, make_split
from ..data.npz import read_user_arrays
from ..errors import ConfigError, DataError, RunError
from ..parsing import loads_json
from ..train.evaluate import open_run, predict
from ..train.lock import lock
from ..train.rundir import is_finished, read_signals
from .grid import load_grid
from .sweep import sweep

PLAN, GRID, RESULT, SUMMARY = "plan.npz", "grid.toml", "holdout.npz", "holdout.json"
MODELS = "models"  # the grid's name: the trainings live in DIR/models/model<k>/seed<s>
HELD_OUT = "held_out"  # folder of the per-model held-out lists (data.exclude files)


def assign(n: int, models: int, ratio: float, folds: int, seed: int) -> np.ndarray:
    """(K, n) bool: which model holds out which sample (see the module docstring)."""
    rng = np.random.default_rng(seed)
    if folds:
        if not 2 <= folds <= min(n, 255):
            raise ConfigError(f"holdout: --folds {folds} must be between 2 and {min(n, 255)}")
        fold = np.empty(n, dtype=np.int64)
        fold[rng.permutation(n)] = np.arange(n) % folds
        return fold[None, :] == np.arange(folds)[:, None]
    if not 2 <= models <= 255:
        raise ConfigError(f"holdout: --models {models} must be between 2 and 255")
    m = round(models * (1 - ratio))
    if not 0 < ratio < 1 or not 1 <= m <= models - 1:
        raise ConfigError(
            f"holdout: --ratio {ratio} with {models} models holds each sample out of {m} models; "
            f"choose a ratio in (0, 1) that leaves each sample in and out of at least one model"
        )
    return rng.random((models, n)).argsort(0) < m  # per sample, a random m of the K models


def plan(
    config: str | Path,
    out: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    models: int = 16,
    ratio: float = 0.75,
    folds: int = 0,
    seed: int = 0,
) -> Path:
    """Write DIR/plan.npz, DIR/held_out/model<k>.npy and DIR/grid.toml; returns the grid file."""
    out, config = Path(out), Path(config).resolve()
    cfg = load_config(config, [*overrides, "out=unused"])
    with lock(out):  # a second `holdout plan` into the same folder at the same time is refused
        return _plan(out, config, cfg, overrides, models, ratio, folds, seed)


def _plan(
    out: Path,
    config: Path,
    cfg: Any,
    overrides: list[str] | tuple[str, ...],
    models: int,
    ratio: float,
    folds: int,
    seed: int,
) -> Path:
    there = [name for name in (PLAN, GRID, HELD_OUT, RESULT) if (out / name).exists()]
    if there:
        what = "a plan" if PLAN in there else f"{there[0]}, which a plan would overwrite"
        raise RunError(f"holdout: {out} already holds {what}; run or collect it, or choose another -o folder")
    if cfg.data.exclude:
        raise ConfigError("holdout: the config sets data.exclude; the plan decides what each model leaves out")
    split = make_split(load_dataset(find_data(cfg.data), resize=cfg.data.resize), cfg.data)
    held = assign(len(split.train_idx), models, ratio, folds, seed)
    seeds = cfg.seed + np.arange(len(held))
    (out / HELD_OUT).mkdir(parents=True, exist_ok=True)
    for k, row in enumerate(held):
        write_atomic(out / HELD_OUT / f"model{k:02d}.npy", lambda f, r=row: np.save(f, split.train_idx[r]))
    arrays = {"indices": split.train_idx, "held_out": held, "model_seeds": seeds, "folds": np.array(folds)}
    write_atomic(out / PLAN, lambda f: np.savez(f, **arrays))
    scheme = f"{folds} folds" if folds else f"{len(held)} models at ratio {ratio}"
    grid = {
        "name": MODELS,
        "title": f"held-out models: {scheme}, subset seed {seed}",
        "config": str(config),
        "overrides": list(overrides),
        "seeds": [cfg.seed],
        "variant": [
            {
                "name": f"model{k:02d}",
                "seed_offset": k,
                "overrides": [f"data.exclude={_toml_string(out / HELD_OUT / f'model{k:02d}.npy')}"],
            }
            for k in range(len(held))
        ],
    }
    write_text(out / GRID, f"# memgate holdout plan; run it with: memgate holdout run {out}\n" + tomli_w.dumps(grid))
    return out / GRID


def _toml_string(path: Path) -> str:
    """The absolute path as a TOML basic string; non-ASCII names stay as they are (JSON's \\u escapes
    of an emoji are surrogate pairs, which TOML rejects)."""
    return json.dumps(str(path.resolve()), ensure_ascii=False)


def run(folder: str | Path, jobs: int = 1, shard: str | None = None) -> int:
    """The plan's trainings through the sweep (resumable, shardable)."""
    folder = Path(folder)
    _need_plan(folder)
    return sweep(folder / GRID, jobs=jobs, shard=shard, runs_root=folder)


def collect(folder: str | Path) -> Path:
    """Evaluate every model on every training sample and write DIR/holdout.npz (and holdout.json)."""
    folder = Path(folder)
    indices, held, seeds = _read_plan(folder)
    runs = load_grid(folder / GRID).runs(folder)
    if len(runs) != len(held):
        raise RunError(
            f"holdout: {folder / GRID} lists {len(runs)} models, the plan {len(held)}; the files of {folder} do not "
            "belong together: plan again into a new folder"
        )
    missing = [r.variant for r in runs if not is_finished(r.out)]
    if missing:
        raise RunError(
            f"holdout: {len(missing)} of {len(runs)} models are not finished ({', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}); run `memgate holdout run {folder}` first"
        )
    first = open_run(runs[0].out)
    full = make_split(first.dataset, replace(first.cfg.data, exclude=""))
    if not np.array_equal(full.train_idx, indices):
        raise RunError(f"holdout: the models' training split is not the plan's ({folder / PLAN}); plan it again")
    labels, x = full.train_labels, first.dataset.x_train[indices]
    probs = np.stack([_softmax(k, r.out, first, held[k], indices, x) for k, r in enumerate(runs)])  # K x N x C
    result, correct = aggregate(held, probs, labels)
    seen = result["heldout_count"] > 0  # samples some model held out (every one under --folds)
    lab = cleanlab_score(labels[seen], result["heldout_probs"][seen].astype(np.float64))
    if lab is not None:  # cleanlab as its docs ask: on out-of-sample predicted probabilities
        result["cleanlab"] = np.full(len(labels), np.nan, np.float16)
        result["cleanlab"][seen] = lab
    result.update(indices=indices, labels=labels, clean_labels=full.clean_labels, noisy=full.noisy)
    result.update(held_out=held, model_seeds=seeds)
    write_atomic(folder / RESULT, lambda f: np.savez(f, **result))
    summary = {
        "models": len(runs),
        "n": len(indices),
        "heldout_count": [int(result["heldout_count"].min()), int(result["heldout_count"].max())],
        **split_half_stability(held, correct),
    }
    if full.noisy.any():  # injected noise: the out-of-sample scores' AUROC for the wrong labels
        names = {"1-cscore": "scores", "heldout_loss": "heldout_loss", "cleanlab_heldout": "cleanlab"}
        summary["noisy_auroc"] = {
            k: auroc(result[v][seen].astype(np.float64), full.noisy[seen]) for k, v in names.items() if v in result
        }
    write_json(folder / SUMMARY, summary)
    return folder / RESULT


def summary_lines(path: Path) -> list[str]:
    """What `memgate holdout collect` prints about the holdout.npz at ``path`` (from holdout.json)."""
    summary = loads_json((path.parent / SUMMARY).read_text())  # just written by collect
    rho = summary["split_half_spearman"]
    lines = []
    if "noisy_auroc" in summary:
        auc = ", ".join(f"{k} {v:.3f}" for k, v in summary["noisy_auroc"].items())
        lines.append(f"AUROC for the injected noisy labels, out of sample: {auc}")
    lines.append(
        f"{path}: {summary['n']:,d} samples, each held out by {summary['heldout_count'][0]}-"
        f"{summary['heldout_count'][1]} of {summary['models']} models; split-half Spearman of the C-score "
        + (f"{rho:.3f}" if rho is not None else "- (too few models)")
    )
    return lines


def _softmax(k: int, run: Path, first, held: np.ndarray, indices: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Model k's softmax on every training sample, after checking it trained on exactly the complement
    of its held-out list (so no sample is ever scored as held out by a network that saw it)."""
    trained = read_signals(run)["indices"]
    if not np.array_equal(np.sort(trained), np.sort(indices[~held])):
        raise RunError(f"holdout: {run} trained on other samples than model {k} of the plan; train it again")
    return predict(open_run(run) if k else first, x).logits.double().softmax(1).numpy()


def aggregate(held: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """holdout.npz's estimates from the plan (K x N held out) and every model's softmax (K x N x C),
    and the K x N correctness they come from."""
    n = len(labels)
    p_label = probs[:, np.arange(n), labels]
    correct = (probs.argmax(2) == labels).astype(np.float64)
    n_out, n_in = held.sum(0), (~held).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cscore = (correct * held).sum(0) / n_out
        in_correct = (correct * ~held).sum(0) / n_in
        mean = {
            "heldout_p_label": (p_label * held).sum(0) / n_out,
            "heldout_loss": (-np.log(np.maximum(p_label, 1e-12)) * held).sum(0) / n_out,
            "heldout_probs": (probs * held[:, :, None]).sum(0) / n_out[:, None],
        }
    f16 = np.float16
    result = {
        "heldout_count": n_out.astype(np.uint8),
        "in_count": n_in.astype(np.uint8),
        "cscore": cscore.astype(f16),
        **{k: v.astype(f16) for k, v in mean.items()},
        "in_correct": in_correct.astype(f16),
        "memorisation": (in_correct - cscore).astype(f16),
        "scores": (1 - cscore).astype(f16),
    }
    return result, correct


def split_half_stability(held: np.ndarray, correct: np.ndarray) -> dict[str, float | int | None]:
    """Spearman between the C-score estimates of two disjoint halves of the models (even / odd), over
    the samples that both halves hold out."""
    halves = [np.arange(len(held))[i::2] for i in (0, 1)]
    est, ok = [], np.ones(held.shape[1], dtype=bool)
    for h in halves:
        n_out = held[h].sum(0)
        ok &= n_out > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            est.append((correct[h] * held[h]).sum(0) / n_out)
    if ok.sum() < 3 or len(halves[1]) == 0:
        return {"split_half_spearman": None, "split_half_n": int(ok.sum())}
    rho = spearmanr(est[0][ok], est[1][ok]).statistic
    return {"split_half_spearman": float(rho), "split_half_n": int(ok.sum())}


def _need_plan(folder: Path) -> Path:
    plan_there, grid_there = (folder / PLAN).exists(), (folder / GRID).exists()
    if not plan_there and not grid_there:
        raise RunError(f"holdout: {folder} holds no plan; make one with memgate holdout plan -c CONFIG -o {folder}")
    if not (folder / PLAN).is_file() or not (folder / GRID).is_file():
        broken = PLAN if not (folder / PLAN).is_file() else GRID
        raise RunError(
            f"holdout: the plan in {folder} is incomplete ({broken} is missing or not a file); "
            "plan again into a new folder"
        )
    return folder / PLAN


def _read_plan(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, held_out K x N, model seeds) of a plan.npz, read safely and checked to fit together."""
    fix = "plan again into a new folder"
    path = _need_plan(folder)
    try:
        z = read_user_arrays(path, "holdout", fix)
    except DataError as e:
        raise RunError(str(e)) from None
    missing = [k for k in ("indices", "held_out", "model_seeds") if k not in z]
    if missing:
        raise RunError(f"holdout: {path} lacks {missing[0]}; the plan is damaged, {fix}")
    indices, held, seeds = z["indices"], z["held_out"], z["model_seeds"]
    ok = (
        indices.ndim == 1
        and indices.dtype.kind in "iu"
        and held.ndim == 2
        and held.dtype == bool
        and held.shape[0] >= 2
        and held.shape[1] == len(indices)
        and seeds.shape == (held.shape[0],)
        and seeds.dtype.kind in "iu"
    )
    if not ok:
        raise RunError(
            f"holdout: {path} is damaged (indices {indices.shape}, held_out {held.shape}, model_seeds {seeds.shape} "
            f"do not fit together); {fix}"
        )
    return indices, held, seeds
