"""One typed, frozen configuration for every memgate run.

Defaults follow the authors' released code ("faithful"); the paper-text variants are one key away.
A config is built from the defaults, then a TOML file, then ``KEY=VALUE`` overrides (dotted keys,
values parsed as TOML). Unknown keys and bad values raise ``ConfigError`` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from .errors import ConfigError, short_repr
from .parsing import loads_toml, read_toml

# Paper section 5: hidden width of the gate head over each stage.
DEFAULT_GATE_HIDDEN = {2: 216, 3: 512}
MAX_SEED = 2**32 - 1  # numpy's RandomState takes seeds below 2**32


@dataclass(frozen=True)
class ModelConfig:
    depth: int = 110  # 6n+2 for basic blocks, 9n+2 for bottleneck blocks
    block: Literal["basic", "bottleneck"] = "basic"
    shortcut: Literal["A", "B"] = "B"  # B: 1x1 conv + BN (released code); A: subsample + zero pad
    preact: bool = False  # pre-activation units (He et al. 2016b); released code: post-activation
    gates: tuple[int, ...] = ()  # stages carrying an entropy gate, e.g. (3,) or (2, 3); () = baseline
    num_classes: int = 10


@dataclass(frozen=True)
class GateConfig:
    hidden: tuple[int, ...] = ()  # one width per gate; () = paper's 216 over B2, 512 over B3
    input: Literal["output", "first_unit"] = "output"  # released code reads the stage output o2
    flatten: bool = False  # head reads the flattened feature map instead of its global average
    relu: bool = False  # ReLU between the head's two linear layers (released code: none)
    g: Literal["sigmoid", "normalized"] = "sigmoid"  # released code: sigmoid(beta*(H - lnC/2))
    beta: float = 8 / 2.3  # slope of the sigmoid mapping, per nat of entropy
    detach_g: bool = False  # cut the classification loss's path into the backbone through g
    # The constant-g control (issue 23): in [0, 1], equation (1) blends every sample with this g
    # (e.g. the gated run's mean g) while the head still trains on its own loss and its g is still
    # recorded, so the run asks whether the per-sample g matters; -1 = off (the per-sample g).
    fixed_g: float = -1.0


@dataclass(frozen=True)
class DataConfig:
    dataset: Literal["cifar10", "cifar100"] = "cifar10"
    path: str = ""  # archive, folder or .npz; "" = look in $MEMGATE_DATA, then download
    val_size: int = 5000  # held-out validation images; 0 = train on all 50k
    split_seed: int = 0  # the split is fixed across runs, independent of the run seed
    train_subset: int = 0  # stratified subset of the training split for quick runs; 0 = all
    label_noise: float = 0.0  # fraction of training labels corrupted
    noise_type: Literal["symmetric", "asymmetric"] = "symmetric"
    noise_seed: int = 0  # the noisy set is fixed across runs, like the split
    # released code uses CIFAR-10's constants for both datasets; imagenet: the public pretrained
    # CIFAR ResNets' (akamaster) ImageNet mean/std, chosen by `memgate import`
    normalize: Literal["released", "dataset", "imagenet"] = "released"
    augment: bool = True  # 4-pixel zero pad + random crop + horizontal flip
    exclude: str = ""  # .npy/.csv/.txt of dataset training indices to drop from the training split
    # image files that are not 32x32 RGB: "none" refuses them; "resize" squeezes each to 32x32;
    # "crop" scales its shorter side to 32 and keeps the centre (both with Pillow, bilinear)
    resize: Literal["none", "resize", "crop"] = "none"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 0  # 0 = paper: 333 with a validation split, 300 without
    batch_size: int = 128  # global batch; split over ranks under torchrun
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = ()  # 0-based epochs where LR /= 10; () = at 40% and 60% of epochs
    warmup_epochs: int = -1  # epochs at warmup_lr; -1 = paper: 1 when depth >= 110, else 0
    warmup_lr: float = 0.01
    gate_iters: int = 1  # k: gate steps per model step (the model steps on every k-th batch)
    init: str = "scratch"  # "scratch" or an ungated run directory / checkpoint whose weights to copy
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (else fp32); false: fp32
    # what train.amp resolved to when the run started ("bf16" or "fp32"), written by memgate into
    # the run's config; "" = resolve on this machine. A run resumes only in the precision it began in.
    precision: Literal["", "bf16", "fp32"] = ""
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU (~1.3-1.7x) and GPU
    compile: bool = False  # torch.compile the model
    eval_every: int = 1  # evaluate val/test every N epochs (and always after the last one)
    checkpoint_every_s: float = 600.0  # extra mid-epoch checkpoints for long epochs; 0 = epoch ends
    # keep the network's weights every N epochs in snapshots/ (scores averaged over training, e.g.
    # input-loss curvature); 0 = none. Changes no result, so a run in progress may turn it on.
    snapshot_every: int = 0
    # none: train everything; backbone: train the gate heads only (backbone weights fixed, BN
    # statistics still updated); backbone_bn: also keep the backbone's BN statistics fixed
    freeze: Literal["none", "backbone", "backbone_bn"] = "none"


@dataclass(frozen=True)
class GateOptimConfig:
    lr: float = 0.01
    schedule: Literal["constant", "step50"] = "constant"  # step50: /10 every 50 epochs
    momentum: float = 0.9
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    gate: GateConfig = GateConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    gate_optim: GateOptimConfig = GateOptimConfig()
    seed: int = 0  # model init and data order; not the split or the noise
    out: str = "runs/default"  # run directory
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def comparable(self) -> dict[str, Any]:
        """The part of the config that defines a run's results (where and on what it runs do not)."""
        d = self.to_dict()
        d.pop("out")
        d.pop("device")
        return d


def stage_units(m: ModelConfig) -> int:
    """Units per stage: depth = 6n+2 (basic) or 9n+2 (bottleneck)."""
    return (m.depth - 2) // (6 if m.block == "basic" else 9)


# ----------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) is tuple:
        return "a list of integers"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check a raw TOML value against a field type and convert lists to tuples."""
    origin = get_origin(tp)
    bad = ConfigError(f"config: {key} must be {_type_name(tp)}, got {short_repr(value)}")  # bounded: crafted input
    if origin is Literal:
        if value not in get_args(tp):
            raise bad
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise bad
        return tuple(value)
    if origin in (Union, types.UnionType):  # pragma: no cover - no optional fields today
        raise TypeError(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config field type {tp}")  # pragma: no cover


def _build(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for key in raw:
        if key not in names:
            where = f"{prefix}{key}"
            raise ConfigError(f"config: unknown key '{where}' (known in this section: {', '.join(sorted(names))})")
    kwargs = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            if not isinstance(raw[f.name], dict):
                raise ConfigError(f"config: '{key}' is a section; set its keys as {key}.NAME")
            kwargs[f.name] = _build(tp, raw[f.name], key + ".")
        else:
            kwargs[f.name] = _coerce(key, raw[f.name], tp)
    return cls(**kwargs)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=VALUE`` -> (["a", "b"], value); VALUE is read as TOML, else taken as a plain string."""
    if "=" not in item:
        raise ConfigError(f"config: override '{item}' must look like KEY=VALUE, e.g. train.epochs=5")
    key, text = item.split("=", 1)
    key = key.strip().removeprefix("--")
    if not key:
        raise ConfigError(f"config: override '{item}' has an empty key")
    try:
        value = loads_toml(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return key.split("."), value


def _set(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config: '{'.'.join(path)}' goes inside a value that is not a section")
    node[path[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- TOML file <- overrides, then resolved ("auto" values filled) and validated."""
    raw: dict[str, Any] = read_toml(path) if path is not None else {}
    for item in overrides:
        keys, value = parse_override(item)
        _set(raw, keys, value)
    return resolve(_build(Config, raw))


def config_from_dict(raw: dict[str, Any]) -> Config:
    return resolve(_build(Config, raw))


# ----------------------------------------------------------------------------- resolving


def resolve(cfg: Config) -> Config:
    """Fill the paper's "auto" values so a saved config states exactly what ran, then validate."""
    m, g, t = cfg.model, cfg.gate, cfg.train
    validate_model(m)
    hidden = g.hidden or tuple(DEFAULT_GATE_HIDDEN[s] for s in m.gates)
    full_set = cfg.data.val_size == 0
    epochs = t.epochs or (300 if full_set else 333)
    # The paper's 120/180 of 300 and 133/200 of 333 are both 40% and 60% of training.
    milestones = t.milestones or tuple(sorted({e for e in (round(0.4 * epochs), round(0.6 * epochs)) if e >= 1}))
    warmup = t.warmup_epochs if t.warmup_epochs >= 0 else int(m.depth >= 110)
    cfg = dataclasses.replace(
        cfg,
        gate=dataclasses.replace(g, hidden=hidden),
        train=dataclasses.replace(t, epochs=epochs, milestones=milestones, warmup_epochs=warmup),
    )
    validate(cfg)
    return cfg


def validate_model(m: ModelConfig) -> None:
    if m.block == "basic" and (m.depth < 8 or (m.depth - 2) % 6):
        raise ConfigError(
            f"config: model.depth={m.depth} is not 6n+2 for basic blocks "
            "(allowed: 8, 14, 20, 32, 44, 56, 110, 1202, ...)"
        )
    if m.block == "bottleneck" and (m.depth < 11 or (m.depth - 2) % 9):
        raise ConfigError(
            f"config: model.depth={m.depth} is not 9n+2 for bottleneck blocks (allowed: 11, 20, 29, 56, 110, 164, ...)"
        )
    bad = [s for s in m.gates if s not in (2, 3)]
    if bad:
        raise ConfigError(
            f"config: model.gates={list(m.gates)} names stage {bad[0]}; a gate can sit on stage 2 or 3 "
            "(stage 1 has no earlier stage to fall back to)"
        )
    if m.gates and stage_units(m) < 2:
        raise ConfigError(
            f"config: model.depth={m.depth} gives one unit per stage, leaving a gate no extra layers "
            "to skip; use a deeper net (basic: depth >= 14, bottleneck: depth >= 20)"
        )
    if len(set(m.gates)) != len(m.gates):
        raise ConfigError(f"config: model.gates={list(m.gates)} repeats a stage")
    if m.num_classes < 2:
        raise ConfigError(f"config: model.num_classes={m.num_classes} must be at least 2")
    _at_most("model.depth", m.depth)
    _at_most("model.num_classes", m.num_classes)


# Upper bounds far beyond any CIFAR run, so that a typo (or a crafted file) is a config error and not
# an allocator traceback, a run of a million epochs, or an overflow inside the optimizer.
LIMITS = {
    "model.depth": 2000,  # the deepest CIFAR ResNet is ResNet-1202
    "model.num_classes": 100_000,
    "gate.hidden": 65_536,
    "train.epochs": 10_000,
    "train.batch_size": 65_536,
    "train.lr": 10.0,
    "train.warmup_lr": 10.0,
    "train.weight_decay": 1.0,
    "train.gate_iters": 1_000,
    "train.eval_every": 10_000,
    "train.snapshot_every": 10_000,
    "gate_optim.lr": 10.0,
    "gate_optim.weight_decay": 1.0,
    "gate.beta": 1_000.0,
    "data.val_size": 10_000_000,
    "data.train_subset": 10_000_000,
}


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"config: {key}={value} must be {'>= 0' if allow_zero else '> 0'}")
    _at_most(key, value)


def _at_most(key: str, value: float) -> None:
    if key in LIMITS and value > LIMITS[key]:
        raise ConfigError(f"config: {key}={value:g} is beyond any sensible run (at most {LIMITS[key]:g})")


def validate(cfg: Config) -> None:
    m, g, d, t, go = cfg.model, cfg.gate, cfg.data, cfg.train, cfg.gate_optim
    if len(g.hidden) != len(m.gates):
        raise ConfigError(
            f"config: gate.hidden has {len(g.hidden)} entries for {len(m.gates)} gate(s) "
            f"model.gates={list(m.gates)}; give one width per gate or [] for the defaults"
        )
    if any(h < 1 for h in g.hidden):
        raise ConfigError(f"config: gate.hidden={list(g.hidden)} must hold positive widths")
    for h in g.hidden:
        _at_most("gate.hidden", h)
    _positive("gate.beta", g.beta)
    if g.fixed_g != -1.0 and not 0.0 <= g.fixed_g <= 1.0:
        raise ConfigError(f"config: gate.fixed_g={g.fixed_g} must be in [0, 1] (a constant g) or -1 (off)")
    _positive("data.val_size", d.val_size, allow_zero=True)
    _positive("data.train_subset", d.train_subset, allow_zero=True)
    if not 0.0 <= d.label_noise < 1.0:
        raise ConfigError(f"config: data.label_noise={d.label_noise} must be a rate in [0, 1)")
    _positive("train.epochs", t.epochs)
    _positive("train.batch_size", t.batch_size)
    _positive("train.lr", t.lr)
    _positive("train.warmup_lr", t.warmup_lr)
    _positive("train.momentum", t.momentum, allow_zero=True)
    for key, mom in (("train.momentum", t.momentum), ("gate_optim.momentum", go.momentum)):
        if mom >= 1:
            raise ConfigError(f"config: {key}={mom:g} must be below 1 (SGD momentum; the paper's is 0.9)")
    _positive("train.weight_decay", t.weight_decay, allow_zero=True)
    _positive("train.gate_iters", t.gate_iters)
    _positive("train.checkpoint_every_s", t.checkpoint_every_s, allow_zero=True)
    _positive("train.eval_every", t.eval_every)
    _positive("train.snapshot_every", t.snapshot_every, allow_zero=True)
    _positive("gate_optim.lr", go.lr)
    _positive("gate_optim.momentum", go.momentum, allow_zero=True)
    _positive("gate_optim.weight_decay", go.weight_decay, allow_zero=True)
    if list(t.milestones) != sorted(set(t.milestones)) or any(e < 1 for e in t.milestones):
        raise ConfigError(f"config: train.milestones={list(t.milestones)} must be increasing epochs >= 1")
    if t.precision == "bf16" and not t.amp:
        raise ConfigError("config: train.precision=bf16 contradicts train.amp=false; leave train.precision empty")
    if t.freeze != "none" and not m.gates:
        raise ConfigError(f"config: train.freeze={t.freeze} leaves nothing to train without a gate; add model.gates")
    if t.gate_iters > 1 and not m.gates:
        raise ConfigError("config: train.gate_iters > 1 needs a gate (model.gates is empty)")
    if not cfg.out:
        raise ConfigError("config: out must name a run directory")
    for key, seed in (("seed", cfg.seed), ("data.split_seed", d.split_seed), ("data.noise_seed", d.noise_seed)):
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"config: {key}={seed} must be a seed between 0 and {MAX_SEED} (2**32 - 1)")


def describe_keys() -> list[tuple[str, str, Any]]:
    """(dotted key, type description, default) for every config key: the README's table."""
    rows = []

    def walk(cls: type, prefix: str) -> None:
        hints = get_type_hints(cls)
        for f in fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, prefix + f.name + ".")
            else:
                rows.append((prefix + f.name, _type_name(tp), f.default))

    walk(Config, "")
    return rows
