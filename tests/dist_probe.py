"""Run under torchrun: the wsl-images command, counting what crosses ranks and what is written.

Usage: torchrun ... tests/dist_probe.py OUT_FOLDER CLI_ARGS... Every torch.distributed
collective our code calls is counted, and every shard file a rank publishes is recorded; each
rank writes ``OUT_FOLDER/rank<RANK>.json`` with ``code``, ``collectives`` and ``written``, and
exits with the command's exit code. The environment may ask for simulations (:mod:`dist_sim`).
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dist_sim
import platforms

from wsl_images._util import TempFile
from wsl_images.cli import main
from wsl_images.jobs import _shards as shards

COLLECTIVES = [
    "all_gather",
    "all_gather_object",
    "all_reduce",
    "all_to_all",
    "barrier",
    "broadcast",
    "broadcast_object_list",
    "gather",
    "gather_object",
    "recv",
    "reduce",
    "scatter",
    "scatter_object_list",
    "send",
]
calls: Counter[str] = Counter()
written: list[str] = []


def _counted(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return function(*args, **kwargs)

    return wrapper


def _recorded(
    atomic_file: Callable[..., AbstractContextManager[TempFile]],
) -> Callable[..., Iterator[TempFile]]:
    def recording(target: str | os.PathLike[str], **kwargs: Any) -> Any:
        written.append(Path(target).name)
        return atomic_file(target, **kwargs)

    return recording


def run() -> int:
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    if os.environ["RANK"] != "0":
        _outlive_sigterm()
    platforms.models_on_cpu()
    done = dist_sim.apply()
    for name in COLLECTIVES:  # our code calls them as dist.NAME: patched at the module
        setattr(dist, name, _counted(name, getattr(dist, name)))
    shards.atomic_file = _recorded(shards.atomic_file)  # type: ignore[assignment]
    code = main(argv)
    record = {"code": code, "collectives": dict(calls), "written": written}
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(record))
    done()
    return code


def _outlive_sigterm() -> None:
    """Keep this rank running to its record when torchrun stops it.

    torchrun sends SIGTERM to the other ranks as soon as one exits with an error (rank 0 does
    when inputs failed), then SIGKILL 30 s later. A rank still leaving the process group then
    must finish and write its record, so rank 0 does not wait for the records. The rank prints
    every thread's stack (where it was) and goes on: a rank that never reaches its record (as
    one did in gloo's teardown on torch 2.1, waiting for the GIL it held) shows where it hung.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    if hasattr(faulthandler, "register"):  # not on Windows, where torchrun is not tested
        faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)


if __name__ == "__main__":
    sys.exit(run())
