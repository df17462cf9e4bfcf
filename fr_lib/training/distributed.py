"""torchrun / DDP helpers: process-group setup from the environment, per-rank batches, gathers with gradient."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device_type: str) -> DistContext:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT); backend nccl
    on CUDA, gloo on CPU. A single process (no WORLD_SIZE or 1) gets the trivial context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), int(os.environ.get("LOCAL_RANK", dist.get_rank())), dist.get_world_size())


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) on each rank -> (world_size * B, ...) in rank order; gradients flow back to every rank's slice
    (torch.distributed.nn's autograd-aware all_gather). Every rank must pass the same shape."""
    import warnings

    import torch.distributed.nn.functional as dist_fn

    # deprecated in favour of a private API (_functional_collectives) but still the public autograd-aware gather
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(dist_fn.all_gather(x), dim=0)


def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s Python object on every rank (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class RankBatchSampler(torch.utils.data.Sampler):
    """This rank's share of a batch sampler: batches rank, rank + W, rank + 2W, ... and the same number of
    batches on every rank (the extra ones are dropped), so collective calls stay in step."""

    def __init__(self, batch_sampler, rank: int, world_size: int):
        self.batch_sampler, self.rank, self.world_size = batch_sampler, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    def __iter__(self):
        for i, batch in enumerate(self.batch_sampler):
            if i >= len(self) * self.world_size:
                break
            if i % self.world_size == self.rank:
                yield batch

    def __len__(self) -> int:
        return len(self.batch_sampler) // self.world_size
