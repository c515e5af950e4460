"""What a torchrun test cannot have on this machine, simulated in each rank by :func:`apply`.

Set by environment variables (all optional):

- ``SIM_PG_TIMEOUT=S``: the caller makes the process group itself (gloo, collectives time out
  after S seconds, standing for torch's 10-30 minute default) before wsl-images runs.
- ``SIM_NCCL_ONLY=1``: that group behaves as an NCCL-only group does for CPU tensors: every
  collective on it fails (this machine has no GPU, so no real NCCL group can be made).
- ``SIM_SLOW_LISTING=S``: rank 0 takes S seconds more to list the inputs or scan the data folder.
- ``SIM_SLOW_BUILD=S``: local rank 0 takes S seconds more to load the model (a slow download).
- ``SIM_HIDE=NAME,...``: rank 0's listings of folders do not show these file names, as an NFS
  client's cached listing misses files that other nodes renamed into the folder.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import torch.distributed as dist

import wsl_images.evaluation._evaluate
import wsl_images.inference
import wsl_images.jobs._run
from wsl_images.inference import Classifier

COLLECTIVES = [
    "all_gather",
    "all_gather_object",
    "all_reduce",
    "barrier",
    "broadcast",
    "broadcast_object_list",
    "gather",
    "gather_object",
    "reduce",
    "scatter",
    "scatter_object_list",
]
NCCL_REFUSAL = "No backend type associated with device type cpu (simulated NCCL-only group)"


def apply() -> Callable[[], None]:
    """Apply the simulations the environment asks for; returns what to call at exit."""
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    done: Callable[[], None] = lambda: None  # noqa: E731
    if "SIM_PG_TIMEOUT" in os.environ:
        dist.init_process_group("gloo", timeout=timedelta(seconds=120))
        dist.barrier()  # the ranks start the test together, whatever their start-up times
        # The same group, now with the short timeout (a group of its own, so that creating it
        # under load cannot time out).
        seconds = float(os.environ["SIM_PG_TIMEOUT"])
        short = dist.new_group(backend="gloo", timeout=timedelta(seconds=seconds))
        _make_world(short)
        done = _leave
    if os.environ.get("SIM_NCCL_ONLY") == "1":
        _refuse_cpu_collectives()
    if rank == 0 and "SIM_SLOW_LISTING" in os.environ:
        seconds = float(os.environ["SIM_SLOW_LISTING"])
        # Wherever a listing looks the function up: the package's face and the sharded run.
        slow = _slow(wsl_images.inference.iter_inputs, seconds)
        wsl_images.inference.iter_inputs = slow  # type: ignore[attr-defined]
        wsl_images.jobs._run.iter_inputs = slow
        wsl_images.evaluation._evaluate.scan = _slow(wsl_images.evaluation._evaluate.scan, seconds)
    if local_rank == 0 and "SIM_SLOW_BUILD" in os.environ:
        seconds = float(os.environ["SIM_SLOW_BUILD"])
        Classifier.__init__ = _slow(Classifier.__init__, seconds)  # type: ignore[method-assign]
    if rank == 0 and os.environ.get("SIM_HIDE"):
        os.listdir = _hiding(os.listdir, os.environ["SIM_HIDE"].split(","))
    return done


def _leave() -> None:
    if dist.is_initialized():  # wsl-images must leave a caller's group alone, but may not
        dist.destroy_process_group()


def _make_world(group: Any) -> None:
    """Collectives without a group go to ``group``: it plays the caller's default group."""
    for name in COLLECTIVES:
        function = getattr(dist, name)

        @functools.wraps(function)
        def on_group(*args: Any, __f: Callable[..., Any] = function, **kwargs: Any) -> Any:
            if kwargs.get("group") in (None, dist.group.WORLD):
                kwargs["group"] = group
            return __f(*args, **kwargs)

        setattr(dist, name, on_group)


def _refuse_cpu_collectives() -> None:
    for name in COLLECTIVES:
        function = getattr(dist, name)

        @functools.wraps(function)
        def refusing(*args: Any, __f: Callable[..., Any] = function, **kwargs: Any) -> Any:
            if kwargs.get("group") in (None, dist.group.WORLD):
                raise RuntimeError(NCCL_REFUSAL)
            return __f(*args, **kwargs)

        setattr(dist, name, refusing)


def _slow(function: Callable[..., Any], seconds: float) -> Callable[..., Any]:
    @functools.wraps(function)
    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return function(*args, **kwargs)

    return slow


def _hiding(listdir: Callable[..., list[str]], names: Iterable[str]) -> Callable[..., list[str]]:
    hidden = set(names)

    def stale(path: Any = ".") -> list[str]:
        return [n for n in listdir(path) if n not in hidden]

    return stale
