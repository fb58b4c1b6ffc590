"""The precision a run computes in: bf16 autocast where the device has native bf16, else fp32.

``train.amp = true`` asks for bf16 autocast; it runs on a GPU with native bf16 (Ampere and later)
and on a CPU whose instruction set has bf16 arithmetic (x86 ``avx512_bf16`` or ``amx_bf16``, Arm
``bf16``). Elsewhere the run is fp32 and
says so in one line. What ran is recorded as ``train.precision`` in the run's config (and so in its
summary), and a run is resumed only in the precision it started in.

Under bf16 autocast, what stays fp32 (and why):
- weights, gradients and both optimizers' state: parameters are fp32 leaves; autocast casts a bf16
  copy per op, so updates and momentum accumulate in fp32 (no loss scaling is needed for bf16);
- BatchNorm running statistics and their batch reductions (fp32 buffers; the kernel accumulates in
  fp32 and takes bf16 activations in and out);
- both losses: cross-entropy of ``logits.float()``;
- the gate's softmax, entropy and g (``models.gate_value`` works on ``logits.float()``), so g is
  fp32 wherever it is recorded; the blend ``g*o2 + (1-g)*o1`` runs in the activations' dtype;
- every per-sample signal (loss, margin, correctness, gate loss and entropy, softmax) and every
  accuracy/loss accumulator: computed from ``.float()`` logits.
Convolutions and linear layers (backbone and gate heads) take bf16 inputs and accumulate in fp32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path

import torch

from ..config import Config
from ..errors import ConfigError

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 (AVX-512, AMX), Arm (FEAT_BF16)
CPUINFO = Path("/proc/cpuinfo")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU does bf16 arithmetic natively (read from /proc/cpuinfo's flags)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and set(value.split()) & set(BF16_CPU_FLAGS):
            return True
    return False


def cuda_has_bf16(device: torch.device) -> bool:
    """Native bf16 on this GPU (Ampere and later, or ROCm); emulated bf16 (V100, T4) is slow, so no."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(device: torch.device, amp: bool) -> tuple[str, str]:
    """('bf16' or 'fp32', why) for ``train.amp`` on ``device``."""
    if not amp:
        return "fp32", "train.amp=false"
    if device.type == "cuda":
        if cuda_has_bf16(device):
            return "bf16", "bf16 autocast on CUDA"
        name = torch.cuda.get_device_name(device)
        return "fp32", f"fp32: {name} has no native bf16 (before Ampere: V100, T4, P100), so train.amp has no effect"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16", "bf16 autocast: this CPU has native bf16"
    return "fp32", f"fp32: {device.type} has no native bf16 here, so train.amp has no effect"


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast context of a precision on ``device`` (fp32: none)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def with_precision(cfg: Config, device: torch.device) -> tuple[Config, str]:
    """``cfg`` with ``train.precision`` filled for ``device`` (kept when already set) and why; a run
    recorded as bf16 on a device without bf16 cannot be continued bit-identically here."""
    precision, why = resolve_precision(device, cfg.train.amp)
    if cfg.train.precision == "fp32" or cfg.train.precision == precision:
        return cfg, why if cfg.train.precision == precision else "fp32 (train.precision=fp32)"
    if cfg.train.precision == "bf16":
        raise ConfigError(
            f"config: train.precision=bf16, but {device.type} here has no native bf16; run it on a machine with "
            "bf16 (an Ampere or later GPU, or a CPU with avx512_bf16/amx_bf16), or start a new run with train.amp=false"
        )
    return replace(cfg, train=replace(cfg.train, precision=precision)), why
