"""Per-sample training signals, recorded from the training passes themselves (no extra pass).

For every training sample at every epoch: the final classifier's loss, its margin (logit of the
given label minus the largest other logit; AUM is its mean over epochs), whether it was correct and
its EL2N (Paul et al. 2021: the L2 norm of softmax minus the one-hot label; the paper's score is its
value early in training);
for each gate, its classifier's loss on the given label and its predictive entropy (g itself is in
gates.npz). Histories are float16, epochs x N, columns in training-split order (``indices`` maps
them to dataset indices), stored row by row as epochs end (``train/history.py``). The softmax of
every training sample is kept at two epochs: the last one
before the first LR drop and the final one (what cleanlab-style tools take as input).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import Config


def signal_names(stages: list[int]) -> list[str]:
    """The per-sample histories a run records, in file order."""
    per_gate = [f"{kind}_b{s}" for s in stages for kind in ("gate_loss", "gate_entropy")]
    return ["loss", "margin", "correct", "el2n", *per_gate]


def probs_epochs(cfg: Config) -> dict[str, int]:
    """0-based epochs whose training-pass softmax is kept: before the first LR drop, and the last."""
    epochs = {"probs_final": cfg.train.epochs - 1}
    if cfg.train.milestones and cfg.train.milestones[0] >= 1:
        epochs["probs_before_drop"] = cfg.train.milestones[0] - 1
    return epochs


@torch.no_grad()
def per_sample(logits: Tensor, gate_logits: dict[int, Tensor], y: Tensor) -> dict[str, Tensor]:
    """Every signal of ``signal_names`` for one batch, float32 (B,)."""
    logits = logits.float()
    logp = F.log_softmax(logits, dim=1)
    out = {
        "loss": -logp.gather(1, y[:, None]).squeeze(1),
        "margin": logits.gather(1, y[:, None]).squeeze(1) - logits.scatter(1, y[:, None], -torch.inf).amax(1),
        "correct": (logits.argmax(1) == y).float(),
        "el2n": torch.linalg.vector_norm(logp.exp() - F.one_hot(y, logits.shape[1]).float(), dim=1),
    }
    for s, z in gate_logits.items():
        glogp = F.log_softmax(z.float(), dim=1)
        out[f"gate_loss_b{s}"] = -glogp.gather(1, y[:, None]).squeeze(1)
        out[f"gate_entropy_b{s}"] = -(glogp.exp() * glogp).sum(1)
    return out


class SampleSignals:
    """This epoch's signals on the device (filled batch by batch at the samples' positions), saved in
    each checkpoint; a finished epoch's become a row of the run's history (``train/history.py``)."""

    def __init__(self, names: list[str], n: int, probs_at: dict[str, int], device: torch.device):
        self.names, self.n, self.probs_at, self.device = names, n, probs_at, device
        self.epoch: dict[str, Tensor] = {}
        self.probs_epoch: Tensor | None = None
        self.probs: dict[str, Tensor] = {}  # name in probs_at -> (N, C) float16

    def start_epoch(self, epoch: int, num_classes: int) -> None:
        self.epoch = {k: torch.zeros(self.n, device=self.device) for k in self.names}
        keep = epoch in self.probs_at.values()
        self.probs_epoch = torch.zeros((self.n, num_classes), device=self.device) if keep else None

    def record(self, pos: Tensor, logits: Tensor, gate_logits: dict[int, Tensor], y: Tensor) -> None:
        for k, v in per_sample(logits, gate_logits, y).items():
            self.epoch[k][pos] = v
        if self.probs_epoch is not None:
            self.probs_epoch[pos] = torch.softmax(logits.detach().float(), dim=1)

    def end_epoch(self, epoch: int, reduce) -> dict[str, np.ndarray]:
        """The epoch's rows (float16, N); ``reduce`` sums a tensor over data-parallel ranks (each filled
        its own positions)."""
        rows = {k: reduce(self.epoch[k]).half().cpu().numpy() for k in self.names}
        for name, e in self.probs_at.items():
            if e == epoch and self.probs_epoch is not None:
                self.probs[name] = reduce(self.probs_epoch).half().cpu()
        return rows

    def probs_arrays(self) -> dict[str, object]:
        """The kept softmax snapshots and their 1-based epochs."""
        out: dict[str, object] = {}
        for name, t in self.probs.items():
            out[name] = t.numpy()
            out[f"{name}_epoch"] = self.probs_at[name] + 1  # 1-based, as metrics.jsonl counts
        return out

    def state(self) -> dict[str, object]:
        return {
            "epoch": {k: v.cpu() for k, v in self.epoch.items()},
            "probs_epoch": self.probs_epoch.cpu() if self.probs_epoch is not None else None,
            "probs": self.probs,
        }

    def load(self, state: dict[str, object]) -> None:
        epoch = {k: v.to(self.device) for k, v in state["epoch"].items()}
        if epoch and (set(epoch) != set(self.names) or any(v.shape != (self.n,) for v in epoch.values())):
            raise ValueError("per-sample signals of the current epoch do not fit this run")
        pe = state["probs_epoch"]
        self.epoch = epoch
        self.probs_epoch = pe.to(self.device) if pe is not None else None
        self.probs = dict(state["probs"])
