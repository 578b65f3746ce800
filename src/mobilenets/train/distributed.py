"""Data-parallel set-up: one process per device under ``torchrun``, or a single process.

``torchrun`` sets RANK, LOCAL_RANK and WORLD_SIZE; without them the same code runs as one process.
Backend: NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from ..device import resolve_device


@dataclass(frozen=True, kw_only=True)
class Dist:
    """This process's place in the job and the device it trains on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def is_main_process() -> bool:
    """Whether this is rank 0 of a ``torchrun`` job, or a lone process."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device: str | None) -> Dist:
    """Join the ``torchrun`` job when there is one; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return Dist(rank=rank, local_rank=local_rank, world_size=world_size, device=resolved)


def teardown(env: Dist) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(tensor: torch.Tensor, env: Dist, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    """Reduce ``tensor`` in place over the job's processes (a no-op for one process); return it."""
    if env.enabled:
        dist.all_reduce(tensor, op)
    return tensor


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (this process's share of a seeded per-epoch shuffle, padded to equal
    shares) that can start part-way through an epoch: ``set_epoch(epoch, skip)`` drops the first
    ``skip`` indices, those an interrupted run had already trained on."""

    def __init__(self, dataset: Dataset, env: Dist, seed: int) -> None:
        super().__init__(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def shard(length: int, env: Dist) -> list[int]:
    """This process's indices of an evaluation set: every ``world_size``-th, without padding, so that
    summed counts are exact."""
    return list(range(env.rank, length, env.world_size))
