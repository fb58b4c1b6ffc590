"""`memgate ood RUN --ood SOURCE ...`: does g flag out-of-distribution inputs, against the standard scores?

The run's test split is in-distribution; each SOURCE's test split (any data format memgate reads,
its labels and class count ignored) or a synthetic set (``gaussian``, ``uniform``: as many images as
the test split, seeded) is out-of-distribution. Scores (higher = more likely OOD): g of each gate,
minus the gate classifier's max softmax, minus the final classifier's max softmax (Hendrycks &
Gimpel 2017), and the energy -logsumexp(logits) (Liu et al. 2020). Reported: AUROC and the false
positive rate on in-distribution images at 95% true positive rate on OOD ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..atomic import write_json, write_text
from ..data import load_dataset
from ..data.dataset import IMAGE_SHAPE
from ..markdown import table
from ..outputs import claim, record, run_folder
from ..train.evaluate import Outputs, open_run, predict
from ..train.rundir import OOD
from .metrics import auroc, fpr_at_tpr

SYNTHETIC = ("gaussian", "uniform")


def synthetic_images(kind: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` uint8 32x32 RGB noise images: Gaussian (mean 127.5, sd 64, clipped) or uniform 0..255."""
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return np.clip(rng.normal(127.5, 64, (n, *IMAGE_SHAPE)), 0, 255).astype(np.uint8)
    return rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8)


def ood_scores(out: Outputs) -> dict[str, np.ndarray]:
    """Every OOD score, one per image (higher = more likely out-of-distribution)."""
    scores = {f"g_b{s}": g.numpy() for s, g in out.g.items()}
    for s, z in out.gate_logits.items():
        scores[f"gate_neg_max_softmax_b{s}"] = -torch.softmax(z, 1).amax(1).numpy()
    scores["neg_max_softmax"] = -torch.softmax(out.logits, 1).amax(1).numpy()
    scores["energy"] = -torch.logsumexp(out.logits, 1).numpy()
    return {k: v.astype(np.float64) for k, v in scores.items()}


def run_ood(
    run: str | Path, sources: list[str], out: str | Path | None = None, device: str = "auto", force: bool = False
) -> str:
    out_dir = claim(out or run_folder(run), run, "ood", force)
    r = open_run(run, device=device)
    test_x = r.dataset.x_test
    inside = ood_scores(predict(r, test_x))
    # The archive's file name, not its resolved path: results get committed and shared.
    inside_name = f"{r.dataset.name} ({Path(r.dataset.source).name}, test, {len(test_x):,d})"
    result: dict = {"run": str(run), "in_distribution": inside_name, "ood": {}}
    for src in sources:
        images = (
            synthetic_images(src, len(test_x))
            if src in SYNTHETIC
            else load_dataset(src, resize=r.cfg.data.resize).x_test
        )
        outside = ood_scores(predict(r, images))
        truth = np.r_[np.zeros(len(test_x), bool), np.ones(len(images), bool)]
        result["ood"][src] = {
            "n": len(images),
            "scores": {
                k: {
                    "auroc": auroc(np.r_[inside[k], outside[k]], truth),
                    "fpr95": fpr_at_tpr(np.r_[inside[k], outside[k]], truth),
                }
                for k in inside
            },
        }
    write_json(out_dir / OOD, result)
    text = _markdown(result)
    write_text(out_dir / "ood.md", text)
    record(out_dir, run, "ood")
    return text + f"\n(ood.md and ood.json in {out_dir})"


def _markdown(result: dict) -> str:
    lines = [
        f"# Out-of-distribution detection: {result['run']}",
        "",
        f"In-distribution: {result['in_distribution']}.",
        "",
    ]
    for src, res in result["ood"].items():
        ranked = sorted(res["scores"].items(), key=lambda kv: -kv[1]["auroc"])
        lines += [f"## OOD: {src} ({res['n']:,d} images)", ""]
        lines += table(
            ["score", "AUROC", "FPR at 95% TPR"], ([k, f"{v['auroc']:.4f}", f"{v['fpr95']:.4f}"] for k, v in ranked)
        )
        lines.append("")
    return "\n".join(lines)
