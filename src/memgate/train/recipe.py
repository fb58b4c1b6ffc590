"""The paper's training recipe: two optimizers, pure LR schedules, and the two-loss step.

Semantics (SPEC.md): the gate loss updates the gate heads only; the classification loss updates
everything else (and, unless ``detach_g``, reaches the backbone through g as well). Both gradients
are computed before either optimizer steps. The gate steps every batch, the model every k-th.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config
from ..models import param_groups

# ----------------------------------------------------------------------------- LR schedules


def model_lr(cfg: Config, epoch: int) -> float:
    """Model LR during 0-based ``epoch``: warm-up, then /10 from the start of each milestone epoch."""
    t = cfg.train
    if epoch < t.warmup_epochs:
        return t.warmup_lr
    return t.lr * 0.1 ** sum(epoch >= m for m in t.milestones)


def gate_lr(cfg: Config, epoch: int) -> float:
    """Gate LR during 0-based ``epoch``.

    ``step50`` follows the released code: the first /10 takes effect at the start of epoch 49,
    then 99, 149, ...
    """
    go = cfg.gate_optim
    if go.schedule == "step50":
        return go.lr * 0.1 ** ((epoch + 1) // 50)
    return go.lr


def freeze_bn(model: nn.Module) -> None:
    """Keep the backbone's BN statistics fixed (``train.freeze=backbone_bn``): eval mode for every
    BatchNorm outside the gate heads, after ``model.train()``."""
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d) and ".gates." not in f".{name}":
            m.eval()


def set_lr(opt: torch.optim.Optimizer | None, lr: float) -> None:
    if opt is not None:
        for group in opt.param_groups:
            group["lr"] = lr


# ----------------------------------------------------------------------------- optimizers


def make_optimizers(model: nn.Module, cfg: Config) -> tuple[torch.optim.SGD | None, torch.optim.SGD | None]:
    """(model optimizer over the backbone or None when ``train.freeze`` fixes it, gate optimizer over
    the gate heads or None for a baseline)."""
    backbone, gate = param_groups(model)
    t, go = cfg.train, cfg.gate_optim
    model_opt = None
    if t.freeze == "none":
        model_opt = torch.optim.SGD(
            backbone, lr=model_lr(cfg, 0), momentum=t.momentum, weight_decay=t.weight_decay, foreach=True
        )
    else:
        for p in backbone:
            p.requires_grad_(False)
    if not gate:
        return model_opt, None
    return model_opt, torch.optim.SGD(
        gate, lr=gate_lr(cfg, 0), momentum=go.momentum, weight_decay=go.weight_decay, foreach=True
    )


# ----------------------------------------------------------------------------- one batch


@dataclass
class StepResult:
    """Detached per-batch results; nothing here has been synchronised to the host."""

    loss: Tensor  # classification loss (mean over the batch)
    correct: Tensor  # number of correct final predictions
    gate_loss: Tensor  # sum over gates of their cross-entropy (0 for a baseline)
    gate_correct: Tensor  # correct predictions of the deepest gate's classifier
    g: dict[int, Tensor]  # per-sample g of each gated stage
    logits: Tensor  # final classifier logits (B, C), detached: per-sample signals are computed from them
    gate_logits: dict[int, Tensor]  # each gate classifier's logits (B, C), detached


def _params(opt: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in opt.param_groups for p in group["params"]]


def train_step(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    model_opt: torch.optim.Optimizer | None,
    gate_opt: torch.optim.Optimizer | None,
    step_model: bool = True,
    autocast: AbstractContextManager | None = None,
    sync_grads: Callable[[list[Tensor]], None] | None = None,
) -> StepResult:
    """One batch of SPEC.md's two-loss training. ``step_model=False`` on batches the model skips
    (k > 1) and when the backbone is frozen (``model_opt`` None). ``sync_grads`` averages gradients
    over data-parallel ranks."""
    step_model = step_model and model_opt is not None
    with autocast or nullcontext():
        out = model(x)
    loss = F.cross_entropy(out.logits.float(), y)
    gate_outs = list(out.gates.values())
    gate_loss = sum((F.cross_entropy(go.logits.float(), y) for go in gate_outs), loss.new_zeros(()))

    # Both gradients first, then both steps. The model builds the two losses' paths apart (see
    # EntropyGate), so one backward of their sum gives the heads the gate loss's gradient only and
    # the backbone the classification loss's only. On batches the model skips, only the gate
    # loss is back-propagated, which never leaves the heads.
    if gate_opt is not None:
        gate_opt.zero_grad(set_to_none=True)
    if step_model:
        model_opt.zero_grad(set_to_none=True)
        (loss + gate_loss if gate_opt is not None else loss).backward()
    elif gate_opt is not None:
        gate_loss.backward()
    if sync_grads is not None:
        params = (_params(gate_opt) if gate_opt is not None else []) + (_params(model_opt) if step_model else [])
        sync_grads([p.grad for p in params if p.grad is not None])
    if gate_opt is not None:
        gate_opt.step()
    if step_model:
        model_opt.step()

    with torch.no_grad():
        correct = (out.logits.argmax(1) == y).sum()
        gate_correct = (gate_outs[-1].logits.argmax(1) == y).sum() if gate_outs else correct * 0
    return StepResult(
        loss.detach(),
        correct,
        gate_loss.detach(),
        gate_correct,
        {s: go.g.detach() for s, go in out.gates.items()},
        out.logits.detach(),
        {s: go.logits.detach() for s, go in out.gates.items()},
    )
