"""The checkpoint dict: built and restored here only; atomic writes, ``weights_only`` loads,
architecture checks, baseline initialisation, snapshots and the RNG states that make resume
bit-identical."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_atomic
from ..config import Config, ModelConfig, config_from_dict
from ..errors import CheckpointError, ConfigError, StorageError, short_repr
from ..models import CifarResNet, unwrap
from .rundir import CHECKPOINT, snapshot_path
from .state import EpochTotals, RunState


def build(
    cfg: Config,
    net: CifarResNet,
    model_opt: torch.optim.Optimizer | None,
    gate_opt: torch.optim.Optimizer | None,
    state: RunState,
) -> dict[str, Any]:
    """Everything a run needs to continue exactly where it is: weights, optimizers, progress, RNG."""
    s = state
    return {
        "config": cfg.to_dict(),
        "model": net.state_dict(),
        "model_opt": model_opt.state_dict() if model_opt else None,
        "gate_opt": gate_opt.state_dict() if gate_opt else None,
        "epoch": s.epoch,
        "batch": s.batch,
        "iteration": s.iteration,
        "totals": s.totals.state() if s.totals else None,
        "g_epoch": s.g_epoch.cpu() if s.g_epoch is not None else None,
        "metrics": s.metrics,
        "train_time": s.train_time,
        "last_eval": s.last_eval,
        "samples": s.samples,
        "rng": rng_state(),
    }


def restore(
    ckpt: dict[str, Any],
    path: Path,
    net: CifarResNet,
    model_opt: torch.optim.Optimizer | None,
    gate_opt: torch.optim.Optimizer | None,
    device: torch.device,
) -> RunState:
    """Load a checkpoint made by ``build`` into the model and optimizers; returns the run's progress.

    A file whose fields have the wrong types or shapes (damaged, or crafted to pass ``weights_only``)
    is a one-line ``CheckpointError``, never a traceback."""
    if ckpt.get("imported_from"):
        raise CheckpointError(
            f"checkpoint: {path} holds an imported network, not a training run; train a new run with "
            f"train.init={Path(path).parent} (it copies the weights), in another out="
        )
    load_model_state(net, ckpt, path)
    try:
        if model_opt is not None:
            model_opt.load_state_dict(ckpt["model_opt"])
        if gate_opt is not None:
            gate_opt.load_state_dict(ckpt["gate_opt"])
        c = ckpt
        s = RunState(epoch=_count(c, "epoch"), batch=_count(c, "batch"), iteration=_count(c, "iteration"))
        s.totals = EpochTotals.from_state(c["totals"], device) if c["totals"] else None
        s.g_epoch = c["g_epoch"].to(device) if c["g_epoch"] is not None else None
        s.metrics, s.train_time = list(c["metrics"]), float(c["train_time"])
        s.last_eval = dict(c.get("last_eval") or {})
        s.samples = dict(c.get("samples") or {})
        if len(s.metrics) != s.epoch:
            raise ValueError("progress fields disagree")
        set_rng_state(c["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        raise CheckpointError(
            f"checkpoint: {path} has damaged training state ({e.__class__.__name__}: {str(e)[:80]}); "
            "delete it to start over, or restore it from a backup"
        ) from None
    return s


def _count(ckpt: dict[str, Any], key: str) -> int:
    v = ckpt[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{key}={short_repr(v)} is not a count")  # bounded: a crafted value may be huge
    return v


def save_snapshot(cfg: Config, net: CifarResNet, run: Path, epoch: int) -> None:
    """The network's weights after ``epoch`` (1-based): a checkpoint with only config and model, so
    ``load`` and ``load_model_state`` read it like any other."""
    path = snapshot_path(run, epoch)
    try:
        path.parent.mkdir(exist_ok=True)
    except OSError as e:
        raise StorageError(
            f"storage: cannot create {path.parent} ({e.strerror}); free disk space or choose another out="
        ) from None
    save({"config": cfg.to_dict(), "model": unwrap(net).state_dict(), "epoch": epoch}, path)


def save(obj: dict[str, Any], path: Path) -> None:
    """torch.save through the atomic writer: a crash mid-save leaves the old file intact. torch's
    writer reports a full disk as a RuntimeError, which becomes the same one-line StorageError."""
    try:
        write_atomic(path, lambda f: torch.save(obj, f))
    except RuntimeError as e:
        raise StorageError(
            f"storage: cannot write {path} ({str(e).splitlines()[0][:80]}); free disk space or choose a writable folder"
        ) from None


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"checkpoint: {path} not found; pass a run directory or its checkpoint.pt")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means an unusable file
        raise CheckpointError(
            f"checkpoint: cannot load {path} ({e.__class__.__name__}); it is damaged or not a memgate checkpoint"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"checkpoint: {path} is not a memgate checkpoint (no model/config entries)")
    model = ckpt["model"]
    if not isinstance(ckpt["config"], dict) or not isinstance(model, dict):
        raise CheckpointError(f"checkpoint: {path} is damaged: its config or model entry is not a mapping")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise CheckpointError(f"checkpoint: {path} is damaged: its model entry holds something other than tensors")
    return ckpt


def checkpoint_config(ckpt: dict[str, Any], path: str | Path) -> Config:
    try:
        return config_from_dict(ckpt["config"])
    except ConfigError as e:
        raise CheckpointError(f"checkpoint: {path} holds a config this version cannot read ({e})") from None


def _arch(m: ModelConfig) -> str:
    kind = "pre-act" if m.preact else "post-act"
    gates = f"gates {list(m.gates)}" if m.gates else "no gate"
    return f"ResNet-{m.depth} {m.block} {kind} shortcut {m.shortcut}, {m.num_classes} classes, {gates}"


def load_model_state(model: CifarResNet, ckpt: dict[str, Any], path: str | Path) -> None:
    """Load a checkpoint's weights into ``model``, refusing another architecture with a clear message."""
    cfg = checkpoint_config(ckpt, path)
    net = unwrap(model)
    mine, theirs = net.cfg, cfg.model
    if mine != theirs:  # a ModelConfig is the whole architecture
        raise CheckpointError(
            f"checkpoint: {path} is a {_arch(theirs)}, but the model is {_arch(mine)}; "
            "use a checkpoint of the same architecture"
        )
    try:
        net.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise CheckpointError(f"checkpoint: {path} does not fit the model ({first})") from None


def imported_ancestor(init: str, limit: int = 16) -> str | None:
    """The imported network (`memgate import`) a run's ``train.init`` chain starts from, or None.

    Such a network trained on data memgate never saw split (the public CIFAR ResNets: every training
    image), so a validation split carved out of its training set is not held out for it."""
    for _ in range(limit):
        if init == "scratch" or not Path(init).exists():
            return None
        try:
            ckpt = load(init)
        except CheckpointError:
            return None
        if ckpt.get("imported_from"):
            return init
        train = ckpt["config"].get("train")
        init = str(train.get("init", "scratch")) if isinstance(train, dict) else "scratch"
    return None


def init_from_baseline(model: CifarResNet, path: str | Path) -> list[str]:
    """Copy every backbone tensor of a trained ungated network into ``model``; gate heads stay fresh.

    The key mapping is exact and complete: the baseline must hold exactly the gated model's
    non-gate keys with the same shapes. Returns the copied keys.
    """
    path = Path(path)
    ckpt = load(path)
    base_cfg = checkpoint_config(ckpt, path)
    if base_cfg.model.gates:
        raise CheckpointError(
            f"checkpoint: train.init={path} is a gated run (gates {list(base_cfg.model.gates)}); "
            "baseline initialisation needs an ungated run of the same architecture"
        )
    net = unwrap(model)
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith("gates.")}
    given = ckpt["model"]
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"checkpoint: baseline {path} ({_arch(base_cfg.model)}) does not match the model "
            f"({_arch(net.cfg)}): missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for k, v in expected.items():
        if given[k].shape != v.shape:
            raise CheckpointError(
                f"checkpoint: baseline {path} has {k} of shape {tuple(given[k].shape)}, the model "
                f"needs {tuple(v.shape)}; use a baseline of the same architecture"
            )
    with torch.no_grad():
        for k, v in expected.items():
            v.copy_(given[k])
    return sorted(expected)


def rng_state() -> dict[str, Any]:
    """All RNG states, in a form ``weights_only`` loading accepts (tensors, ints, lists)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    # No CUDA generator state: training draws every random number from CPU generators (the data
    # order and augmentation from (seed, epoch)), and a GPU state would tie a checkpoint to a node
    # with as many GPUs.
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    # A "cuda" entry (checkpoints of earlier versions) is ignored: nothing in training uses it.
