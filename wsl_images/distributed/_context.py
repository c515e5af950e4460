"""torch.distributed for classify/embed/evaluate: shard batches across ranks, merge on rank 0.

Under ``torchrun`` (WORLD_SIZE > 1 in the environment) the inputs are cut into the same
consecutive batches as in a single process, and global batch ``b`` goes to rank
``b % world_size``: every input is processed exactly once, and each step's gather brings rank 0
the next ``world_size`` batches in input order, so rank 0 can stream the merged output.

What crosses ranks is Python objects and integer counts, all in CPU memory, so every collective
of this package goes over gloo (:attr:`Context.group`): the process group :func:`init_from_env`
makes, or a gloo group of its own beside a process group the caller made (NCCL alone
included). Its timeout (:data:`WAIT_TIMEOUT`, or ``WSL_IMAGES_DIST_TIMEOUT`` seconds) bounds
every wait of a rank for the others, including rank 0 listing the inputs and the first rank of
a node downloading the weights; the timeout of a caller's process group does not apply to them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..errors import DistributedTimeoutError, InvalidInputError
from ..zoo import resolve_device
from ._placement import gpu_for_rank

__all__ = [
    "TIMEOUT_ENV",
    "WAIT_TIMEOUT",
    "Context",
    "gpu_for_rank",
    "init_from_env",
    "resolve_device",
    "shutdown",
    "wait_timeout",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

# A rank may wait this long for the others: for rank 0 listing millions of files on a network
# filesystem, for the first rank of a node downloading the 3.3 GB 32x48d file (0.5 MB/s), for
# the slowest rank to finish its share. torch's defaults (10 or 30 minutes) are too short.
WAIT_TIMEOUT = timedelta(hours=2)
TIMEOUT_ENV = "WSL_IMAGES_DIST_TIMEOUT"


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size``, its rank on this node.

    ``local_world_size``: the processes on this node (torchrun's LOCAL_WORLD_SIZE; None when
    the launcher does not say). ``timeout``: how long a collective waits for the other ranks
    (None: :func:`wait_timeout`). Build it with :func:`init_from_env`; a Context built by hand
    makes its gloo group on its first collective (every rank must call the same methods).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int | None = None
    timeout: timedelta | None = None
    _group: Any = field(default=None, init=False, compare=False, repr=False)
    _owns_world: bool = field(default=False, init=False, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def group(self) -> Any:
        """The gloo process group this package's collectives use (made on first use)."""
        if self._group is None:
            object.__setattr__(self, "_group", _gloo_group(self.wait))
        return self._group

    @property
    def wait(self) -> timedelta:
        """How long a collective waits for the other ranks."""
        return self.timeout if self.timeout is not None else wait_timeout()

    def device(self, requested: str | torch.device | None) -> torch.device:
        """``requested`` ("auto"/None, "cpu", "cuda", "cuda:1"...); under torchrun a CUDA
        device is this rank's GPU, by :func:`gpu_for_rank`."""
        device = resolve_device(requested)
        if device.type != "cuda" or not self.active:
            return device
        return gpu_for_rank(
            device,
            local_rank=self.local_rank,
            local_world_size=self.local_world_size,
            visible=torch.cuda.device_count(),
        )

    def batches(self, count: int) -> list[int]:
        """The global batch numbers this rank processes, in order."""
        return list(range(self.rank, count, self.world_size))

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        box: list[Any] = [value]
        with self._waiting("for rank 0 (it lists the inputs and checks the output folder)"):
            dist.broadcast_object_list(box, src=0, group=self.group)
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
            with self._waiting("for the other ranks' batches"):
                dist.gather_object(mine, gathered, dst=0, group=self.group)
            for batch in gathered or []:
                if batch is not None:
                    yield batch

    def gather_all(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.active:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        with self._waiting("for every rank to finish its share"):
            dist.all_gather_object(gathered, value, group=self.group)
        return gathered

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``values`` (a CPU tensor) over all ranks, on every rank."""
        if not self.active:
            return values
        total = values.detach().cpu().clone()
        with self._waiting("for every rank to finish its share"):
            dist.all_reduce(total, group=self.group)
        return total

    def total(self, value: int) -> int:
        """The sum of ``value`` over all ranks, on every rank."""
        return int(self.sum(torch.tensor([value], dtype=torch.int64))[0])

    def exit_status(self, *, failed: bool) -> int:
        """The process's exit code for a run that ``failed`` (some inputs, on any rank): 1 on the
        main rank, which reports the run, and 0 on the others. torchrun stops every rank once one
        exits non-zero, so a failing exit anywhere else could cut rank 0's report short."""
        return 1 if failed and self.is_main else 0

    def once_per_node(self, build: Callable[[], T]) -> T:
        """``build()`` on local rank 0 first (downloads land in the cache once per node), then
        on the other ranks, which find the file there."""
        if not self.active:
            return build()
        what = "for the first rank of this node to load the model (it downloads the weights)"
        if self.local_rank == 0:
            try:
                return build()
            finally:
                with self._waiting(what):  # reached even when build failed: nobody waits forever
                    dist.barrier(group=self.group)
        with self._waiting(what):
            dist.barrier(group=self.group)
        return build()

    @contextlib.contextmanager
    def _waiting(self, what: str) -> Iterator[None]:
        """A gloo timeout as an error that says what was awaited and how to wait longer."""
        try:
            yield
        except RuntimeError as exc:
            if "Timed out" not in str(exc):
                raise
            msg = (
                f"Rank {self.rank} of {self.world_size} waited {self.wait} {what}, and gave up. "
                f"If that work takes longer, set {TIMEOUT_ENV} to more seconds (now "
                f"{self.wait.total_seconds():g}); otherwise look for a rank that stopped."
            )
            # The timed-out collective is still in flight in gloo's worker thread: tearing its
            # group down joins that thread, which blocks until the peer answers or exits. Kept
            # until this process exits, so that this rank stops now with the message above.
            _TIMED_OUT_GROUPS.append(self._group)
            raise DistributedTimeoutError(msg) from exc


_TIMED_OUT_GROUPS: list[Any] = []  # see Context._waiting


def wait_timeout() -> timedelta:
    """``WSL_IMAGES_DIST_TIMEOUT`` (seconds) if set, else :data:`WAIT_TIMEOUT`."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return WAIT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e9:
        msg = f"{TIMEOUT_ENV}={text!r} is not a number of seconds: set it to e.g. 14400 (4 h)."
        raise InvalidInputError(msg)
    return timedelta(seconds=seconds)


def init_from_env(device_hint: str | None = None, *, timeout: timedelta | None = None) -> Context:
    """A Context from torchrun's variables; joins the process group when WORLD_SIZE > 1.

    Without a process group, one is made that waits ``timeout`` (None: :func:`wait_timeout`):
    NCCL for CUDA tensors when the ranks run on CUDA (gloo for CPU tensors), gloo otherwise;
    a CUDA rank's device is set to its GPU; this package's collectives use its gloo part. A
    process group the caller made is kept as it is, and a gloo group that waits ``timeout`` is
    made beside it for this package's collectives. Every rank must call this (a collective).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    local_world = os.environ.get("LOCAL_WORLD_SIZE")
    ctx = Context(
        rank=int(os.environ["RANK"]),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(local_world) if local_world else None,
        timeout=timeout if timeout is not None else wait_timeout(),
    )
    device = ctx.device(device_hint)
    if dist.is_initialized():
        group = _gloo_group(ctx.wait)  # now, while every rank is here
    else:
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # Always a timedelta: torch 2.1 refuses timeout=None.
        dist.init_process_group(backend=backend, timeout=ctx.wait)
        logger.info("rank %d of %d joined (%s, %s)", ctx.rank, world, backend, device)
        group = dist.group.WORLD
        object.__setattr__(ctx, "_owns_world", True)
    object.__setattr__(ctx, "_group", group)
    return ctx


def shutdown(ctx: Context, *, wait: bool = True) -> None:
    """Leave the process group (after the last collective); one the caller made stays.

    ``wait``: first wait for every rank to get here, so that no rank tears its connections down
    while a peer still uses them (gloo's teardown can then block until the peer's process exits,
    and torchrun stops a rank still in it once another exits with an error). Pass False on an
    error path, where the other ranks may never come. On torch before 2.8 the teardown waits
    0.2 s more, for gloo's worker threads (see :func:`_let_workers_finish`).
    """
    if not (ctx.active and dist.is_initialized()):
        return
    if not ctx._owns_world and ctx._group is None:
        return  # none of ours to leave (never used, or left already)
    if wait:
        with ctx._waiting("for every rank to finish"):
            dist.barrier(group=ctx.group)
    _let_workers_finish()
    if ctx._owns_world:
        dist.destroy_process_group()
    else:
        dist.destroy_process_group(ctx._group)
    object.__setattr__(ctx, "_group", None)  # the group's teardown happens here, not later


@contextlib.contextmanager
def leaving(ctx: Context) -> Iterator[Context]:
    """``with leaving(ctx):`` runs the block, then :func:`shutdown`: waiting for every rank when
    the block completed, at once when it raised (the other ranks may never come)."""
    try:
        yield ctx
    except BaseException:
        shutdown(ctx, wait=False)
        raise
    shutdown(ctx)


# gloo's worker threads let go of a collective's tensors only after its caller has returned, and
# freeing a tensor Python made takes the GIL. torch before 2.8 tears a process group down holding
# the GIL while it joins those threads, so a teardown right after a collective could wait forever
# for a worker that waits for the GIL. On a loaded 2-core machine a rank hung so after its last
# collective in 2 runs of 20 on torch 2.1 and 8 of 30 on 2.7 (0 of 30 on 2.8); with this pause,
# in 0 of 60 and 0 of 40. Sleeping releases the GIL; nothing tells when the workers are done.
_WORKERS_GRACE = 0.2  # seconds, once per run: the worker needs only to be scheduled
_TEARDOWN_HOLDS_GIL = torch.__version__ < "2.8"  # TorchVersion compares as a version


def _let_workers_finish() -> None:
    """Give gloo's worker threads the GIL before a teardown that would hold it (torch < 2.8)."""
    if _TEARDOWN_HOLDS_GIL:
        time.sleep(_WORKERS_GRACE)


def _gloo_group(timeout: timedelta) -> Any:
    """A gloo group of every rank that waits ``timeout`` (a collective: all ranks call it)."""
    return dist.new_group(backend="gloo", timeout=timeout)
