"""CIFAR ResNets (He et al. 2016a/b) with soft entropy gates over late stages (Garg et al. 2019).

A stage is ``first`` (its first unit, shared by every sample) followed by ``rest`` (units 2..n, the
"extra layers"). A gated stage returns ``g * o2 + (1 - g) * o1`` with ``o1 = first(x)``,
``o2 = rest(o1)`` and ``g`` computed per sample from the entropy of a small gate classifier.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import GateConfig, ModelConfig, stage_units

GMode = Literal["soft", "hard", "skip", "full"]

BASE_WIDTH = 16


def expansion(cfg: ModelConfig) -> int:
    return 1 if cfg.block == "basic" else 4


def stage_channels(cfg: ModelConfig, stage: int) -> int:
    return BASE_WIDTH * 2 ** (stage - 1) * expansion(cfg)


def stage_spatial(stage: int) -> int:
    return 32 // 2 ** (stage - 1)


# ----------------------------------------------------------------------------- units


class ShortcutA(nn.Module):
    """Option A (He et al. 2016a): subsample by the stride and zero-pad the new channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride, self.pad = stride, out_ch - in_ch

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # Split the padding over both ends, as the common public CIFAR ResNets do.
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


def make_shortcut(in_ch: int, out_ch: int, stride: int, kind: str, preact: bool) -> nn.Module | None:
    if stride == 1 and in_ch == out_ch:
        return None
    if kind == "A":
        return ShortcutA(in_ch, out_ch, stride)
    conv = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
    # A pre-activation projection reads the already normalised input, so it needs no BN of its own.
    return conv if preact else nn.Sequential(conv, nn.BatchNorm2d(out_ch))


class Unit(nn.Module):
    """One residual unit: basic (two 3x3 convs) or bottleneck (1x1, 3x3, 1x1), post- or pre-act."""

    def __init__(self, in_ch: int, planes: int, stride: int, cfg: ModelConfig):
        super().__init__()
        self.preact = cfg.preact
        out_ch = planes * expansion(cfg)
        if cfg.block == "basic":
            shapes = [(in_ch, planes, 3, stride), (planes, planes, 3, 1)]
        else:
            shapes = [(in_ch, planes, 1, 1), (planes, planes, 3, stride), (planes, out_ch, 1, 1)]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, padding=k // 2, bias=False) for i, o, k, s in shapes)
        # Post-activation normalises each conv's output; pre-activation each conv's input.
        bn_ch = [i for i, *_ in shapes] if cfg.preact else [o for _, o, *_ in shapes]
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in bn_ch)
        self.shortcut = make_shortcut(in_ch, out_ch, stride, cfg.shortcut, cfg.preact)
        self.project = isinstance(self.shortcut, (nn.Conv2d, nn.Sequential))

    def forward(self, x: Tensor) -> Tensor:
        if self.preact:
            out = x
            for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
                out = F.relu(bn(out))
                if i == 0:
                    skip = self.shortcut(out) if self.project else self._plain_skip(x)
                out = conv(out)
            return out + skip
        out = x
        last = len(self.convs) - 1
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            out = bn(conv(out))
            if i < last:
                out = F.relu(out)
        return F.relu(out + self._plain_skip(x))

    def _plain_skip(self, x: Tensor) -> Tensor:
        return x if self.shortcut is None else self.shortcut(x)


class Stage(nn.Module):
    """One of the paper's blocks B1..B3, with its first unit kept apart from the extra layers."""

    def __init__(self, first: Unit, rest: list[Unit]):
        super().__init__()
        self.first = first
        self.rest = nn.Sequential(*rest)

    def forward(self, x: Tensor) -> Tensor:
        return self.rest(self.first(x))


# ----------------------------------------------------------------------------- gate


def gate_value(logits: Tensor, mode: str = "sigmoid", beta: float = 8 / 2.3) -> Tensor:
    """Hardness g in [0, 1] from the entropy H (nats) of softmax(logits), per sample.

    ``sigmoid``: released code, sigmoid(beta * (H - ln(C)/2)); ``normalized``: paper text, H / ln(C).
    """
    logp = F.log_softmax(logits.float(), dim=1)
    entropy = -(logp.exp() * logp).sum(dim=1)
    log_c = math.log(logits.shape[1])
    if mode == "sigmoid":
        return torch.sigmoid(beta * (entropy - log_c / 2))
    if mode == "normalized":
        return entropy / log_c
    raise ValueError(f"unknown gate mapping {mode!r} (allowed: sigmoid, normalized)")


class EntropyGate(nn.Module):
    """Gate head: its own classifier whose predictive entropy decides how much of o2 to use.

    With autograd on, the two losses' paths are separated by construction (SPEC.md): the logits
    for the gate loss are computed from detached features, so the gate loss reaches the head only;
    g is computed with detached head weights, so the classification loss reaches the backbone
    through g (unless ``detach_g``) but never the head. One backward of the summed losses then
    yields exactly both gradients, with no retained graph (which torch.compile requires).
    """

    def __init__(self, channels: int, spatial: int, hidden: int, num_classes: int, cfg: GateConfig):
        super().__init__()
        self.flatten, self.mode, self.beta, self.detach_g = cfg.flatten, cfg.g, cfg.beta, cfg.detach_g
        in_features = channels * spatial * spatial if cfg.flatten else channels
        layers: list[nn.Module] = [nn.Linear(in_features, hidden)]
        if cfg.relu:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(hidden, num_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(gate logits, g): the logits feed the gate loss, g feeds equation (1)."""
        h = features.flatten(1) if self.flatten else features.mean(dim=(2, 3))
        if not torch.is_grad_enabled():
            logits = self.head(h)
            return logits, gate_value(logits, self.mode, self.beta)
        logits = self.head(h.detach())
        if self.detach_g:
            return logits, gate_value(logits, self.mode, self.beta).detach()
        return logits, gate_value(self._head_frozen(h), self.mode, self.beta)

    def _head_frozen(self, h: Tensor) -> Tensor:
        for layer in self.head:
            h = F.linear(h, layer.weight.detach(), layer.bias.detach()) if isinstance(layer, nn.Linear) else layer(h)
        return h


@dataclass
class GateOutput:
    logits: Tensor  # the gate classifier's logits, (B, C)
    g: Tensor  # hardness per sample as used in equation (1) (under gate.fixed_g: recorded only), (B,), float32


@dataclass
class ModelOutput:
    logits: Tensor  # final classifier logits, (B, C)
    gates: dict[int, GateOutput]  # per gated stage number


# ----------------------------------------------------------------------------- network


class CifarResNet(nn.Module):
    def __init__(self, model: ModelConfig, gate: GateConfig | None = None):
        super().__init__()
        gate = gate or GateConfig()
        self.cfg, self.gate_cfg = model, gate
        n = stage_units(model)
        self.stem = nn.Conv2d(3, BASE_WIDTH, 3, padding=1, bias=False)
        # Post-activation nets normalise the stem; pre-activation ones normalise before the pool.
        self.stem_bn = None if model.preact else nn.BatchNorm2d(BASE_WIDTH)
        self.final_bn = nn.BatchNorm2d(stage_channels(model, 3)) if model.preact else None
        stages = []
        in_ch = BASE_WIDTH
        for s in (1, 2, 3):
            planes = BASE_WIDTH * 2 ** (s - 1)
            units = [Unit(in_ch, planes, 1 if s == 1 else 2, model)]
            in_ch = stage_channels(model, s)
            units += [Unit(in_ch, planes, 1, model) for _ in range(n - 1)]
            stages.append(Stage(units[0], units[1:]))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(in_ch, model.num_classes)
        self.gates = nn.ModuleDict(
            {
                str(s): EntropyGate(stage_channels(model, s), stage_spatial(s), h, model.num_classes, gate)
                for s, h in zip(model.gates, gate.hidden)
            }
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # Released code: conv weights ~ N(0, 2 / (k*k*out_channels)), BN weight 1, bias 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / k))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, g_mode: GMode = "soft", tau: float | Mapping[int, float] = 0.5) -> ModelOutput:
        """``g_mode``: soft (eq. 1), hard (g := 1[g >= tau]; without autograd and with a gate reading o1,
        only the samples with g >= tau run the extra layers), skip (g = 0), full (g = 1). ``tau`` may
        be one threshold per gated stage ({stage: tau}; -inf routes every sample, inf none)."""
        x = self.stem(x)
        if self.stem_bn is not None:
            x = F.relu(self.stem_bn(x))
        gates: dict[int, GateOutput] = {}
        for s, stage in enumerate(self.stages, start=1):
            gate = self.gates[str(s)] if str(s) in self.gates else None
            if gate is None:
                x = stage(x)
            else:
                t = tau[s] if isinstance(tau, Mapping) else tau
                x, gates[s] = self._gated_stage(stage, gate, x, g_mode, t)
        if self.final_bn is not None:
            x = F.relu(self.final_bn(x))
        return ModelOutput(self.fc(x.mean(dim=(2, 3))), gates)

    def _gated_stage(
        self, stage: Stage, gate: EntropyGate, x: Tensor, g_mode: GMode, tau: float = 0.5
    ) -> tuple[Tensor, GateOutput]:
        o1 = stage.first(x)
        reads_o1 = self.gate_cfg.input == "first_unit"
        if reads_o1:
            z, g = gate(o1)
            if g_mode == "skip":  # the gate read o1, so the extra layers need not run at all
                return o1, GateOutput(z, torch.zeros_like(g))
            if g_mode == "hard" and not torch.is_grad_enabled():
                return self._hard_route(stage, o1, g >= tau), GateOutput(z, (g >= tau).float())
            o2 = stage.rest(o1)
        else:
            o2 = stage.rest(o1)
            z, g = gate(o2)
        if g_mode == "hard":
            g = (g >= tau).float()
        elif g_mode in ("skip", "full"):
            g = torch.full_like(g, float(g_mode == "full"))
        blend = g
        if g_mode == "soft" and self.gate_cfg.fixed_g >= 0:  # the constant-g control: the head's g is only recorded
            blend = torch.full_like(g, self.gate_cfg.fixed_g)
        gm = blend.to(o1.dtype).view(-1, 1, 1, 1)
        return gm * o2 + (1 - gm) * o1, GateOutput(z, g)

    @staticmethod
    def _hard_route(stage: Stage, o1: Tensor, hard: Tensor) -> Tensor:
        """Inference with a hard gate: only the samples marked ``hard`` run the extra layers (gathered
        into one smaller batch); a batch that is all easy or all hard takes no gather at all."""
        n_hard = int(hard.sum())
        if n_hard == 0:
            return o1
        if n_hard == len(hard):
            return stage.rest(o1)
        out = o1.clone()
        idx = hard.nonzero().squeeze(1)
        if idx.numel():
            out[idx] = stage.rest(o1[idx])
        return out


def build_model(model: ModelConfig, gate: GateConfig | None = None) -> CifarResNet:
    return CifarResNet(model, gate)


def param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone params, gate params): disjoint, and together every parameter of the model."""
    net = unwrap(model)
    gate_ids = {id(p) for p in net.gates.parameters()}
    backbone = [p for p in net.parameters() if id(p) not in gate_ids]
    gate = [p for p in net.parameters() if id(p) in gate_ids]
    return backbone, gate


def unwrap(model: nn.Module) -> CifarResNet:
    """The CifarResNet inside a torch.compile / DDP wrapper."""
    while not isinstance(model, CifarResNet):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


def count_params(params: list[nn.Parameter] | nn.Module) -> int:
    if isinstance(params, nn.Module):
        params = list(params.parameters())
    return sum(p.numel() for p in params)


def count_macs(model: CifarResNet) -> tuple[int, int]:
    """(MACs per 32x32 image for the whole net incl. gate heads, MACs a sample skips when every g = 0)."""
    total, per_stage = macs_per_stage(model)
    return total, sum(per_stage.values())


@torch.no_grad()
def macs_per_stage(model: CifarResNet) -> tuple[int, dict[int, int]]:
    """(MACs per 32x32 image for the whole net incl. gate heads, {gated stage: MACs of its extra
    layers, units 2..n, which a sample skips when that stage's g = 0}).

    The skippable part is units 2..n of every gated stage; only a gate that reads o1
    (``gate.input = first_unit``) can decide before running them.
    """
    counts: dict[str, int] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):

            def hook(mod: nn.Module, inp: tuple[Tensor], out: Tensor, name: str = name) -> None:
                if isinstance(mod, nn.Conv2d):
                    per_out = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
                    counts[name] = out[0].numel() * per_out
                else:
                    counts[name] = mod.in_features * mod.out_features

            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 3, 32, 32, device=next(model.parameters()).device), g_mode="full")
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    total = sum(counts.values())
    per_stage = {s: sum(v for k, v in counts.items() if k.startswith(f"stages.{s - 1}.rest.")) for s in model.cfg.gates}
    return total, per_stage


def architecture_summary(model: CifarResNet) -> dict:
    backbone, gate = param_groups(model)
    macs, skippable = count_macs(model)
    cfg = model.cfg
    return {
        "depth": cfg.depth,
        "block": cfg.block,
        "shortcut": cfg.shortcut,
        "preact": cfg.preact,
        "units_per_stage": stage_units(cfg),
        "num_classes": cfg.num_classes,
        "gates": list(cfg.gates),
        "gate_input": model.gate_cfg.input if cfg.gates else None,
        "params_total": count_params(model),
        "params_backbone": count_params(backbone),
        "params_gate": count_params(gate),
        "params_gate_per_stage": {str(s): count_params(model.gates[str(s)]) for s in cfg.gates},
        "macs": macs,
        "macs_skippable": skippable,
        "skippable_fraction": skippable / macs,
    }
