"""Process-group handling for ``met3r-eval`` under ``torchrun``: rank/world, device, sharding.

Sequences are sharded round-robin over ranks; each rank appends its finished sequences to its own
file and rank 0 merges them after a barrier, so no two processes ever write the same file.
Outside ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) this is a single process and no
process group is created.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup", "barrier", "teardown", "shard", "rank_file_name"]

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` on ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def _pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        # one GPU per process: torchrun's LOCAL_RANK picks it
        device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return device


def setup(device: str = "auto", backend: str = "auto", timeout_min: float = 24 * 60) -> DistInfo:
    """Read torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and join the process group.

    ``backend="auto"`` is NCCL for CUDA devices and gloo for CPU.  The timeout is long because
    ranks that finish their shard early wait at the final barrier for the slowest rank.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size <= 1:
        return DistInfo(0, 1, 0, dev, None)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs = {}
        if backend == "nccl":
            kwargs["device_id"] = dev  # binds the communicator to this rank's GPU up front
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_min),
            **kwargs,
        )
    return DistInfo(rank, world_size, local_rank, dev, backend)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Round-robin share of ``items`` for ``rank`` (neighbouring sequences spread over ranks)."""
    return list(items[rank::world_size])


def rank_file_name(rank: int) -> str:
    """Per-rank records file of a multi-process run (merged into sequences.jsonl by rank 0)."""
    return f"sequences.rank{rank}.jsonl"
