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
    """The rank context under torchrun (the process group bound to this rank's GPU), else rank 0 of 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    if not dist.is_initialized():
        if device.type == "cuda":  # bound to its device: no guessing of the GPU, no NCCL warning
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def end_distributed() -> None:
    """Close the process group a run opened (NCCL warns, or hangs at exit, without it)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shared_outcome(world: Dist, error: Exception | None) -> None:
    """After work that only rank 0 does (writing the checkpoint), every rank learns whether it failed
    and raises the same error, instead of waiting in the next all-reduce until a timeout."""
    if world.world > 1:
        error = agree(world, error)  # type: ignore[assignment]
    if error is not None:
        raise error


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("config: device=cuda but no CUDA device is visible; use device=cpu or device=auto")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def average_buffers(module: torch.nn.Module, world: Dist) -> None:
    """BN running statistics averaged over the ranks (each rank's saw only its shard of the data), so
    every rank holds the same ones and they describe all of it; integer buffers (BN's batch counter,
    equal on every rank) are taken from rank 0."""
    if world.world > 1:
        for buf in module.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf)
                buf /= world.world
            else:
                dist.broadcast(buf, 0)


def agree(world: Dist, value: object) -> object:
    """Rank 0's ``value``, on every rank."""
    if world.world <= 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
