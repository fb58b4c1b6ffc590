"""Devices and data parallelism: which device a run uses, and the rank context under torchrun.

Gradients are all-reduced by hand (one flat buffer per step) rather than through DDP's wrapper,
because the two losses step two optimizers over disjoint parameter sets on different batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import ConfigError


@dataclass(frozen=True)
class Dist:
    """Data-parallel context: one process per device under torchrun, else rank 0 of 1."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum_(self, t: Tensor) -> Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def average_grads(self, grads: list[Tensor]) -> None:
        if self.world > 1 and grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.world
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()


def init_distributed(device: torch.device) -> Dist:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("config: device=cuda but no CUDA device is visible; use device=cpu or device=auto")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def broadcast_buffers(module: torch.nn.Module, world: Dist) -> None:
    """Keep BN statistics identical across ranks (each rank's running stats saw only its shard)."""
    if world.world > 1:
        for buf in module.buffers():
            dist.broadcast(buf, 0)


def agree(world: Dist, value: object) -> object:
    """Rank 0's ``value``, on every rank."""
    if world.world <= 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
