"""`memgate import`: external CIFAR ResNet checkpoints as memgate runs (eval, analyze, train.init).

Known format (detected by its keys): akamaster/pytorch_resnet_cifar10, the public ResNet-20/32/44/
56/110/1202 (option-A shortcuts, ImageNet mean/std normalisation). A ``torch.save``d dict with
``state_dict`` (keys prefixed ``module.`` by DataParallel; a bare state dict is accepted too):
``conv1.weight``, ``bn1.*``, ``layer{1,2,3}.{i}.conv{1,2}.weight``, ``layer{s}.{i}.bn{1,2}.*``,
``linear.{weight,bias}``. The depth follows from the number of units and is checked; every key and
shape must match exactly, else nothing is written. The real files were saved by a PyTorch older than
BatchNorm's ``num_batches_tracked`` counter: a file with no counter at all gets it filled in (0, as
``BatchNorm2d`` itself does when it loads such a state dict; with a fixed momentum it is never read).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .config import Config, load_config
from .errors import CheckpointError, ConfigError
from .models import build_model
from .train import checkpoint as ckpt_io
from .train.rundir import CHECKPOINT, RUN_FILES, write_config

UNIT_KEY = re.compile(r"^layer([123])\.(\d+)\.(conv|bn)([12])\.(.+)$")
BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
MAX_DEPTH = 1202  # the deepest of the public CIFAR ResNets


def _state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "model" in obj and "config" in obj:
        raise CheckpointError(
            f"import: {path} is a memgate checkpoint already; use its run folder directly (memgate eval, "
            "train.init=...), no import needed"
        )
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"import: {path} holds no state dict of tensors; it is no checkpoint memgate knows")
    if any(v.layout != torch.strided for v in sd.values()):
        raise CheckpointError(f"import: {path} holds sparse tensors; a CIFAR ResNet checkpoint has dense ones")
    if any(v.is_meta for v in sd.values()):
        raise CheckpointError(f"import: {path} holds meta tensors (shapes without data); it holds no weights")
    if any(v.is_complex() for v in sd.values()):
        raise CheckpointError(f"import: {path} holds complex tensors; a CIFAR ResNet's weights are real")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if "linear.weight" in sd and sd["linear.weight"].dim() != 2:
        raise CheckpointError(f"import: {path}: linear.weight is not a matrix (classes x 64); the file is damaged")
    return sd


def _memgate_key(key: str) -> str | None:
    """akamaster key -> memgate key (None: not part of that layout)."""
    if key == "conv1.weight":
        return "stem.weight"
    if key.startswith("bn1.") and key[4:] in BN_FIELDS:
        return "stem_bn." + key[4:]
    if key in ("linear.weight", "linear.bias"):
        return "fc." + key[7:]
    m = UNIT_KEY.match(key)
    if not m:
        return None
    stage, unit, kind, j, field = int(m[1]), int(m[2]), m[3], int(m[4]), m[5]
    where = "first" if unit == 0 else f"rest.{unit - 1}"
    return f"stages.{stage - 1}.{where}.{kind}s.{j - 1}.{field}"


def detect(sd: dict[str, torch.Tensor], path: Path) -> tuple[int, int]:
    """(depth, classes) of an akamaster state dict; a one-line error for any other layout."""
    if "conv1.weight" not in sd or "linear.weight" not in sd or not any(UNIT_KEY.match(k) for k in sd):
        raise CheckpointError(
            f"import: {path} is not a known layout (expected akamaster/pytorch_resnet_cifar10 keys conv1.weight, "
            "layer1.0.conv1.weight, ..., linear.weight); convert it to that layout first"
        )
    units = {s: {int(m[2]) for k in sd if (m := UNIT_KEY.match(k)) and int(m[1]) == s} for s in (1, 2, 3)}
    counts = {s: len(u) for s, u in units.items()}
    if len(set(counts.values())) != 1 or any(u != set(range(len(u))) for u in units.values()):
        raise CheckpointError(f"import: {path} has {counts} units in stages 1-3; a CIFAR ResNet has n in each")
    depth = 6 * counts[1] + 2
    if depth > MAX_DEPTH:
        raise CheckpointError(f"import: {path} claims a ResNet-{depth}; the deepest CIFAR ResNet known is {MAX_DEPTH}")
    for k, v in sd.items():  # the convolutions' shapes follow from the layout: checked before any model is built
        m = UNIT_KEY.match(k)
        if m and m[3] == "conv" and m[5] == "weight":
            planes = 16 * 2 ** (int(m[1]) - 1)
            cin = planes // 2 if (m[2] == "0" and m[4] == "1" and m[1] != "1") else planes
            if tuple(v.shape) != (planes, cin, 3, 3):
                raise CheckpointError(
                    f"import: {path}: {k} has shape {tuple(v.shape)}, a CIFAR ResNet needs {(planes, cin, 3, 3)}"
                )
    return depth, int(sd["linear.weight"].shape[0])


def _fill_bn_counters(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Add ``num_batches_tracked`` beside every BN's ``running_var`` in a file saved before the counter
    existed; a file holding some counters but not all is damaged, not old."""
    bns = sorted({k.rsplit(".", 1)[0] for k in sd if k.startswith("bn1.") or re.match(r"layer\d\.\d+\.bn", k)})
    have = [b for b in bns if f"{b}.num_batches_tracked" in sd]
    if have and len(have) != len(bns):
        raise CheckpointError(
            f"import: {path} has num_batches_tracked for {len(have)} of its {len(bns)} BatchNorm layers; "
            "the file is damaged (re-download it)"
        )
    if have:
        return sd
    return {**sd, **{f"{b}.num_batches_tracked": torch.tensor(0, dtype=torch.long) for b in bns}}


def convert(sd: dict[str, torch.Tensor], path: Path, cfg: Config) -> dict[str, torch.Tensor]:
    """Rename every key to memgate's and check it against a freshly built network of ``cfg``."""
    expected = build_model(cfg.model, cfg.gate).state_dict()
    sd = _fill_bn_counters(sd, path)
    out, extra = {}, []
    for k, v in sd.items():
        mk = _memgate_key(k)
        if mk is None or mk not in expected:
            extra.append(k)
            continue
        if v.shape != expected[mk].shape:
            need = tuple(expected[mk].shape)
            raise CheckpointError(
                f"import: {path}: {k} has shape {tuple(v.shape)}, ResNet-{cfg.model.depth} needs {need}"
            )
        out[mk] = v.to(expected[mk].dtype)
    missing = sorted(set(expected) - set(out))
    if extra or missing:
        raise CheckpointError(
            f"import: {path} does not match an option-A ResNet-{cfg.model.depth}: "
            f"unexpected {extra[:3]}, missing {missing[:3]}; the file is not of the akamaster layout"
        )
    return out


def import_checkpoint(path: str | Path, out: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Write ``out/checkpoint.pt`` and ``out/config.toml`` from an external checkpoint; returns the config."""
    path, out = Path(path), Path(out)
    if path.is_dir():
        raise CheckpointError(f"import: {path} is a folder; pass the downloaded .th/.pt file itself")
    if not path.is_file():
        raise CheckpointError(f"import: {path} not found; pass the downloaded .th/.pt file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means an unusable file
        raise CheckpointError(
            f"import: cannot load {path} ({e.__class__.__name__}); it is damaged or not a checkpoint"
        ) from None
    sd = _state_dict(obj, path)
    depth, classes = detect(sd, path)
    cfg = _config(depth, classes, out, overrides)
    weights = convert(sd, path, cfg)
    if any((out / n).exists() for n in RUN_FILES):
        raise CheckpointError(f"import: {out} already holds a run; choose another -o folder")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"imported_from": str(path), "source_format": "akamaster", "best_prec1": _number(obj.get("best_prec1"))}
    ckpt_io.save({"config": cfg.to_dict(), "model": weights, "epoch": 0, **meta}, out / CHECKPOINT)
    write_config(out, cfg)
    return cfg


def _config(depth: int, classes: int, out: Path, overrides: list[str] | tuple[str, ...]) -> Config:
    dataset = {10: "cifar10", 100: "cifar100"}.get(classes, "cifar10")
    fixed = [f"model.depth={depth}", 'model.shortcut="A"', f"model.num_classes={classes}"]
    base = [*fixed, 'model.block="basic"', "model.preact=false", "model.gates=[]", "gate.hidden=[]"]
    # train.amp=false: the weights were trained in fp32, so eval reproduces the published accuracy exactly
    # (bf16 moves it by a few images); a gated run initialised from it has a config of its own.
    known = [*base, 'data.normalize="imagenet"', f'data.dataset="{dataset}"', "train.amp=false"]
    cfg = load_config(None, [*known, *overrides, f"out={json.dumps(str(out))}"])  # quoted: -o 123 is a folder
    if cfg.model != load_config(None, base).model:
        raise ConfigError(
            f"import: the file is an ungated option-A ResNet-{depth} with {classes} classes; model.* overrides "
            "cannot change that (gate it afterwards: memgate train ... train.init=RUN_DIR)"
        )
    return cfg


def _number(v: Any) -> float | None:
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v)
    return float(v) if isinstance(v, (int, float)) else None
