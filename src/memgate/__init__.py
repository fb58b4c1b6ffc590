"""memgate: soft entropy gates over CIFAR ResNets (Garg et al. 2019).

The library's front door (each name is imported on first use, so ``import memgate`` stays light):

- ``load_config(path, overrides)``: the frozen config of a run (TOML file, then KEY=VALUE overrides);
- ``build_model(cfg.model, cfg.gate)``: the CIFAR ResNet, with entropy gates where configured;
- ``open_run(path)``: a trained run (or imported network) with its config, network and data;
- ``predict(run, images)``: logits, gate logits and g of uint8 NHWC images.

Training a run is ``memgate.train.run.train(cfg)`` (``memgate.train`` is the training package).
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_config": "memgate.config",
    "build_model": "memgate.models",
    "open_run": "memgate.train.evaluate",
    "predict": "memgate.train.evaluate",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'memgate' has no attribute {name!r}")
