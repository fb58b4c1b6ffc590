"""Asymmetric noise flips labels of five classes only (truck->automobile, bird->airplane, deer->horse,
cat<->dog), and those are the classes g finds hardest. How much of a score's AUROC is the class?
AUROC over all training images, then within the images whose true class is a flipped one (can the
score tell the flipped 20% of cats from the other cats?). Ground truth only a study has.

    python results/noise/asym_within_class.py runs/noise/{gated,baseline}_asym20/seed{0,1}
"""

import sys
from pathlib import Path

import numpy as np

from memgate.analysis.metrics import auroc


def main(runs: list[str]) -> None:
    for run in map(Path, runs):
        z = np.load(run / "signals.npz")
        noisy, clean = z["noisy"].astype(bool), z["clean_labels"]
        flipped = np.isin(clean, np.unique(clean[noisy]))
        scores = {"loss, final": z["loss"][-1], "-AUM": -z["margin"].mean(0)}
        if (run / "gates.npz").exists():
            scores["g, final"] = np.load(run / "gates.npz")["g_b3"][-1]
        print(f"{run}: {noisy.sum():,d} noisy labels among {flipped.sum():,d} images of the flipped classes")
        for name, s in scores.items():
            within = auroc(s[flipped], noisy[flipped])
            print(f"  {name:<12s} AUROC all {auroc(s, noisy):.3f}, within the flipped classes {within:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
