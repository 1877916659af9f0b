"""Process group setup for torchrun (NCCL on GPU, gloo on CPU) and the few collectives we use.

A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) gets no process group at all and every
collective here is the identity, so the same code runs under ``python -m trainer`` and torchrun.

Elastic restarts: torchrun's agent keeps one TCPStore for the whole job, so the workers of restart
*n* would find the keys that restart *n-1* left behind (gloo then hangs or fails in
``connectFullMesh``). The process group is therefore built on a ``PrefixStore`` namespaced by
``TORCHELASTIC_RESTART_COUNT`` and the world size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

# Collectives (checkpoint loading on a shared volume included) must finish within this.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job. ``DistInfo()`` is a single CPU process."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    restart_count: int = 0
    max_restarts: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # A gloo group for control-plane collectives on CPU tensors (the stop flag): they never touch
    # the GPU stream, so agreeing on a stop costs no device synchronisation under NCCL.
    control_group: Any = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def last_restart(self) -> bool:
        """True when torchrun will not restart the workers again if this process fails."""
        return self.restart_count >= self.max_restarts


def init_distributed(environ: Mapping[str, str] = os.environ) -> DistInfo:
    """Join the process group torchrun set up (if any) and pick this rank's device."""
    rank = int(environ.get("RANK", "0"))
    local_rank = int(environ.get("LOCAL_RANK", "0"))
    world_size = int(environ.get("WORLD_SIZE", "1"))
    restart_count = int(environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    max_restarts = int(environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    info = DistInfo(rank, local_rank, world_size, restart_count, max_restarts, device)
    if world_size > 1 and not dist.is_initialized():
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT))
        store = dist.PrefixStore(f"sweepq/restart-{restart_count}/world-{world_size}/", store)
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            store=store, rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT,
            device_id=device if device.type == "cuda" else None,
        )
        logger.info("joined process group: rank %d/%d on %s (restart %d of at most %d)",
                    rank, world_size, device, restart_count, max_restarts)
    if world_size > 1:
        info = dataclasses.replace(info, control_group=dist.new_group(backend="gloo"))
    return info


def shutdown(info: DistInfo) -> None:
    if info.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place; returns it."""
    if info.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not info.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, info: DistInfo, *, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not info.is_distributed:
        return obj
    holder = [obj if info.rank == src else None]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def start_max_reduce(value: int, info: DistInfo) -> Any:
    """Begin an all-reduce (max) of an int over the control group; ``finish_max_reduce`` reads it."""
    tensor = torch.tensor([value], dtype=torch.int64)
    if not info.is_distributed:
        return tensor, None
    work = dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=info.control_group, async_op=True)
    return tensor, work


def finish_max_reduce(pending: Any) -> int:
    tensor, work = pending
    if work is not None:
        work.wait()
    return int(tensor[0])


def barrier(info: DistInfo) -> None:
    if info.is_distributed:
        dist.barrier()


@contextlib.contextmanager
def main_process_first(info: DistInfo) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. fills a download cache), then the others."""
    if not info.is_main:
        barrier(info)
    yield
    if info.is_main:
        barrier(info)
