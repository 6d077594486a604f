"""Distributed data parallel helpers: process-group setup under torchrun and a resumable sampler."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from rgmp_model.inference.engine import resolve_device


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_runtime(device: str = "auto") -> Runtime:
    """Single process, or one rank of a ``torchrun`` job (WORLD_SIZE > 1): the process group
    uses nccl on GPUs and gloo on CPUs; each rank takes the GPU of its LOCAL_RANK."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Runtime(0, 1, resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        resolved = torch.device("cuda", local_rank)
    else:
        resolved = torch.device("cpu")
    return Runtime(dist.get_rank(), dist.get_world_size(), resolved)


def shutdown_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


class ResumableDistributedSampler(DistributedSampler):
    """An endless DistributedSampler stream (epoch after epoch, reshuffled with ``seed`` +
    epoch) that starts at sample ``start`` of this rank's stream, so a resumed run sees exactly
    the samples an uninterrupted run would have seen."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int = 0, start: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.num_samples)
            self.set_epoch(epoch)
            yield from list(super().__iter__())[offset:]
            position = (epoch + 1) * self.num_samples
