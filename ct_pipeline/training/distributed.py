"""One process per device: DDP set-up from torchrun's environment, and reductions over ranks.

``torchrun --nproc-per-node=N -m cli train-cls ...`` sets RANK, LOCAL_RANK and WORLD_SIZE; without
them the run is a single process. GPUs talk over NCCL, CPUs over gloo. Only rank 0 writes
logs and checkpoints; every rank computes, and metrics are reduced over all of them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ct_pipeline.devices import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the run.

    Attributes:
        rank: global rank (0 = the one that writes).
        local_rank: rank on this machine (picks the GPU).
        world_size: number of processes.
        device: this process's device.
    """

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(requested_device: str) -> DistContext:
    """Join the process group when torchrun started us (WORLD_SIZE > 1); pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        log.info("rank %d of %d on %s", rank, world_size, device)
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def teardown_distributed(ctx: DistContext) -> None:
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over ranks (a new tensor; the input is untouched)."""
    total = tensor.clone()
    if ctx.is_distributed:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def sync_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Make every rank's buffers (BatchNorm running statistics) the mean over ranks.

    DDP broadcasts rank 0's buffers before each forward, so after an epoch's last step every
    rank still holds statistics updated by its own last batch; this evens them out so that all
    ranks validate and save the same model.
    """
    if not ctx.is_distributed:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(ctx.world_size)
        else:  # counters such as num_batches_tracked: the same on all ranks, rank 0's is kept
            dist.broadcast(buffer, src=0)


def all_gather_columns(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate every rank's (K, N_rank) ``tensor`` along N, in rank order (N may differ)."""
    if not ctx.is_distributed:
        return tensor
    length = torch.tensor([tensor.shape[1]], device=tensor.device)
    lengths = [torch.zeros_like(length) for _ in range(ctx.world_size)]
    dist.all_gather(lengths, length)
    longest = int(max(n.item() for n in lengths))
    padded = torch.zeros(tensor.shape[0], longest, dtype=tensor.dtype, device=tensor.device)
    padded[:, : tensor.shape[1]] = tensor
    parts = [torch.zeros_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:, : int(n.item())] for part, n in zip(parts, lengths)], dim=1)


def all_gather_objects(value: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``value`` (small picklable objects such as sets of found nodules), in rank order."""
    if not ctx.is_distributed:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()
