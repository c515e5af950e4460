"""wsl_images.distributed: the process group torch is asked for, the wait timeout, and the error
a rank raises when the others take longer than it (under torchrun, 2 CPU processes)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from launch import torchrun
from server import FileServer

from wsl_images.distributed import (
    TIMEOUT_ENV,
    WAIT_TIMEOUT,
    Context,
    _context,
    init_from_env,
    leaving,
    shutdown,
    wait_timeout,
)
from wsl_images.errors import InvalidInputError

REPO = Path(__file__).resolve().parents[1]
Served = tuple[FileServer, dict[str, Path]]


@pytest.fixture
def torchrun_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Rank 1 of 2 as torchrun describes it, with no process group yet."""
    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    return monkeypatch


def test_the_process_group_gets_a_timedelta_timeout(torchrun_env: pytest.MonkeyPatch) -> None:
    """torch 2.1 (the floor) refuses timeout=None: "Expected timeout argument to be of type
    datetime.timedelta". The group is made with the wait timeout, from the environment."""
    calls: list[dict[str, Any]] = []
    torchrun_env.setattr(dist, "init_process_group", lambda **kw: calls.append(kw))
    ctx = init_from_env("cpu")
    torchrun_env.setenv(TIMEOUT_ENV, "90")
    init_from_env("cpu")
    assert calls == [
        {"backend": "gloo", "timeout": WAIT_TIMEOUT},
        {"backend": "gloo", "timeout": timedelta(seconds=90)},
    ]
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.local_world_size) == (1, 2, 1, None)


def test_the_wait_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert wait_timeout() == WAIT_TIMEOUT == timedelta(hours=2)
    monkeypatch.setenv(TIMEOUT_ENV, " 14400 ")
    assert wait_timeout() == timedelta(hours=4)
    assert Context(rank=0, world_size=2).wait == timedelta(hours=4)
    assert Context(rank=0, world_size=2, timeout=timedelta(seconds=5)).wait.total_seconds() == 5
    for bad in ("2h", "0", "-3", "nan"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        message = f"WSL_IMAGES_DIST_TIMEOUT='{bad}' is not a number of seconds: set it to e.g."
        with pytest.raises(InvalidInputError, match=message):
            wait_timeout()


def test_one_process_needs_no_process_group() -> None:
    ctx = Context()
    built: list[int] = []
    assert ctx.broadcast("x") == "x" and ctx.gather_all(3) == [3] and ctx.total(4) == 4
    assert ctx.sum(torch.tensor([1, 2])).tolist() == [1, 2]
    assert ctx.once_per_node(lambda: built.append(1) or len(built)) == 1 and built == [1]
    assert list(ctx.merge(iter([[1], [2]]), 2)) == [[1], [2]]
    shutdown(ctx)
    assert not dist.is_initialized()


def test_only_the_main_rank_exits_with_the_runs_failure() -> None:
    """torchrun stops every rank once one exits non-zero: only rank 0, which reports, may."""
    assert Context().exit_status(failed=True) == 1  # one process
    assert Context(rank=0, world_size=2).exit_status(failed=True) == 1
    assert Context(rank=1, world_size=2).exit_status(failed=True) == 0
    assert Context(rank=0, world_size=2).exit_status(failed=False) == 0


def test_shutdown_waits_for_every_rank_unless_on_an_error_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After the last collective, every rank meets at a barrier before tearing its group down
    (gloo's teardown can block while a peer still uses the connections); on an error path,
    where the others may never come, it does not wait. Either way the group is released now,
    after a pause that lets gloo's worker threads take the GIL where the teardown holds it."""
    calls: list[str] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda group: calls.append(f"barrier:{group}"))
    destroy = lambda group=None: calls.append(f"destroy:{group}")  # noqa: E731
    monkeypatch.setattr(dist, "destroy_process_group", destroy)
    monkeypatch.setattr(time, "sleep", lambda seconds: calls.append(f"sleep:{seconds}"))
    monkeypatch.setattr(_context, "_TEARDOWN_HOLDS_GIL", True)
    for wait in (True, False):
        ctx = Context(rank=1, world_size=2)
        object.__setattr__(ctx, "_group", "ours")
        shutdown(ctx, wait=wait)
        assert ctx._group is None
        shutdown(ctx)  # left already: nothing to wait for or destroy
    grace = f"sleep:{_context._WORKERS_GRACE}"
    assert calls == ["barrier:ours", grace, "destroy:ours", grace, "destroy:ours"]

    # A torch whose teardown releases the GIL (2.8 on) needs no pause.
    calls.clear()
    monkeypatch.setattr(_context, "_TEARDOWN_HOLDS_GIL", False)
    ctx = Context(rank=1, world_size=2)
    object.__setattr__(ctx, "_group", "ours")
    shutdown(ctx)
    assert calls == ["barrier:ours", "destroy:ours"]

    # leaving(ctx): the same, chosen by how the block ended.
    calls.clear()
    ctx = Context(rank=1, world_size=2)
    object.__setattr__(ctx, "_group", "done")
    with leaving(ctx):
        pass
    ctx = Context(rank=1, world_size=2)
    object.__setattr__(ctx, "_group", "failed")
    with pytest.raises(KeyError), leaving(ctx):
        raise KeyError("a rank's error")
    assert calls == ["barrier:done", "destroy:done", "destroy:failed"]


def test_a_rank_that_waits_too_long_says_what_it_waited_for(served: Served, tmp_path: Path) -> None:
    """WSL_IMAGES_DIST_TIMEOUT=2 and rank 0 lists the inputs for 6x longer: rank 1 stops with
    an error that names what it waited for and the variable to raise (not gloo's message)."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"not read: the run stops before")
    probe = tmp_path / "probe"
    probe.mkdir()
    args = ["classify", "--model", "resnet18_ssl", "--checkpoint", str(served[1]["zip"])]
    args += ["--workers", "0", "--no-progress", "--device", "cpu", str(images)]
    env = {"SIM_PG_TIMEOUT": "600", "SIM_SLOW_LISTING": "12", TIMEOUT_ENV: "2"}
    proc = torchrun([str(REPO / "tests" / "dist_probe.py"), str(probe), *args], env=env)
    assert proc.returncode != 0
    assert (probe / "rank1.json").exists(), proc.stderr[-6000:]
    assert json.loads((probe / "rank1.json").read_text())["code"] == 1, proc.stderr[-4000:]
    message = (
        "wsl-images classify: error: Rank 1 of 2 waited 0:00:02 for rank 0 (it lists the inputs "
        "and checks the output folder), and gave up. If that work takes longer, set "
        "WSL_IMAGES_DIST_TIMEOUT to more seconds (now 2); otherwise look for a rank that stopped."
    )
    assert message in proc.stderr
