"""Small training runs for tests: a tiny gated ResNet on the learnable toy .npz, and comparisons."""

from memgate.config import load_config
from memgate.train import checkpoint as ckpt_io

TIMING_KEYS = ("epoch_time_s", "eval_time_s", "images_per_s")


def tiny(npz, out, *overrides):
    return load_config(
        None,
        [
            "model.depth=14",
            "model.gates=[3]",
            "gate.hidden=[16]",
            f"data.path={npz}",
            "data.val_size=64",
            "train.epochs=2",
            "train.batch_size=32",
            "train.checkpoint_every_s=0",
            f"out={out}",
            "device=cpu",
            *overrides,
        ],
    )


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _weights(run):
    return ckpt_io.load(run)["model"]
