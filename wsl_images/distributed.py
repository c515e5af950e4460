"""torch.distributed for classify/embed: shard batches across ranks, merge on rank 0 in order.

Under ``torchrun`` (WORLD_SIZE > 1 in the environment) the inputs are cut into the same
consecutive batches as in a single process, and global batch ``b`` goes to rank
``b % world_size``: every input is processed exactly once, and each step's gather brings rank 0
the next ``world_size`` batches in input order, so rank 0 can stream the merged output.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .devices import resolve_device

__all__ = ["Context", "init_from_env", "resolve_device", "shutdown"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size``, its rank on this node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def device(self, requested: str | None) -> torch.device:
        """``requested`` ("auto"/None, "cpu", "cuda", "cuda:1"...); CUDA ranks use LOCAL_RANK."""
        device = resolve_device(requested)
        index: int | None = device.index
        if device.type == "cuda" and index is None and self.active:
            device = torch.device("cuda", self.local_rank)
        return device

    def batches(self, count: int) -> list[int]:
        """The global batch numbers this rank processes, in order."""
        return list(range(self.rank, count, self.world_size))

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        box: list[Any] = [value]
        dist.broadcast_object_list(box, src=0)
        result: T = box[0]
        return result

    def merge(self, local: Iterable[list[T]], count: int) -> Iterator[list[T]]:
        """On rank 0, every rank's batches in global order; nothing on the other ranks.

        ``local`` yields this rank's batches (those of :meth:`batches`); ``count`` is the global
        number of batches.
        """
        if not self.active:
            yield from local
            return
        it = iter(local)
        steps = -(-count // self.world_size)
        for _ in range(steps):
            mine = next(it, None)
            gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
            dist.gather_object(mine, gathered, dst=0)
            for batch in gathered or []:
                if batch is not None:
                    yield batch

    def total(self, value: int) -> int:
        """The sum of ``value`` over all ranks, on every rank."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t)
        return int(t.item())

    def once_per_node(self, build: Callable[[], T]) -> T:
        """``build()`` on local rank 0 first (downloads land in the cache once per node), then
        on the other ranks, which find the file there."""
        if not self.active:
            return build()
        if self.local_rank == 0:
            try:
                return build()
            finally:
                dist.barrier()  # reached even when build failed, so no rank waits forever
        dist.barrier()
        return build()


def init_from_env(device_hint: str | None = None, *, timeout: timedelta | None = None) -> Context:
    """A Context from torchrun's variables; joins the process group when WORLD_SIZE > 1.

    The backend is NCCL for CUDA tensors when the ranks run on CUDA (with gloo for the CPU
    tensors of :meth:`Context.total`), gloo otherwise. ``timeout``: how long a
    collective may wait (torch's default when None).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    ctx = Context(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = ctx.device(device_hint)
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=timeout)
        logger.info("rank %d of %d joined (%s, %s)", ctx.rank, world, backend, device)
    return ctx


def shutdown(ctx: Context) -> None:
    """Leave the process group (after the last collective)."""
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()
