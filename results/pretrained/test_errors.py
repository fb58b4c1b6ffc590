"""Does g flag the errors of a network that has fitted its training set? For every committed
<study>/<run>/test_scores.npz (the 10,000 CIFAR-10 test images, which no run trained on): the
AUROC of g and of the network's own confidence (1 - max softmax) for the final network's test
errors, and their Spearman with the test loss: `memgate scores`' test-split table
(memgate.analysis.export.test_split_table), one per run, gathered into test_errors.md beside this
file. From the repository root: .venv/bin/python results/pretrained/test_errors.py"""

from pathlib import Path

import numpy as np

from memgate.analysis.export import test_split_table

HERE = Path(__file__).resolve().parent


def main() -> None:
    parts = [
        "# The test errors g flags, per run (from the committed test_scores.npz; `python test_errors.py`)",
        "AUROC: the chance that a misclassified test image scores above a correctly classified one "
        "(0.5: no better than chance). 1 - max softmax is the network's own confidence, the usual baseline.",
    ]
    for f in sorted(HERE.glob("*/*/test_scores.npz")):
        with np.load(f) as d:
            scores = {k: d[k] for k in d.files}
        stage = max(int(k[3:]) for k in scores if k.startswith("g_b"))
        run = f.parent.relative_to(HERE)
        table = test_split_table(scores, stage).replace("## On the test split", f"## {run}: test split", 1)
        parts.append(table.strip())
    (HERE / "test_errors.md").write_text("\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
