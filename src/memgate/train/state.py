"""A run's progress between two batches: what a checkpoint must hold to resume bit-identically."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class EpochTotals:
    """Per-epoch sums kept on the device (no host sync until the epoch ends)."""

    loss: Tensor
    correct: Tensor
    gate_loss: Tensor
    gate_correct: Tensor
    seen: Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> EpochTotals:
        z = lambda dt=torch.float32: torch.zeros((), device=device, dtype=dt)  # noqa: E731
        return cls(z(), z(torch.long), z(), z(torch.long), z(torch.long))

    def as_tensor(self) -> Tensor:
        return torch.stack(
            [self.loss, self.correct.float(), self.gate_loss, self.gate_correct.float(), self.seen.float()]
        )

    def state(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu() for k, v in self.__dict__.items()}

    @classmethod
    def from_state(cls, state: dict[str, Tensor], device: torch.device) -> EpochTotals:
        return cls(**{k: v.to(device) for k, v in state.items()})


@dataclass
class RunState:
    epoch: int = 0  # next epoch to run (0-based)
    batch: int = 0  # next batch within that epoch
    iteration: int = 0  # global batches done (decides the model steps when k > 1)
    totals: EpochTotals | None = None
    g_epoch: Tensor | None = None  # (gates, N) g of the current epoch, device
    metrics: list[dict] = field(default_factory=list)
    train_time: float = 0.0  # seconds spent in the current epoch's training batches
    samples: dict = field(default_factory=dict)  # SampleSignals.state(): per-sample signals, saved whole
    last_eval: dict[str, dict[int, Tensor]] = field(default_factory=dict)  # latest val/test g per stage, f16 CPU
