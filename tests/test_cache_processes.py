"""Several processes sharing one cache: one download, the same verified file for all."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultserver import Faults, FaultServer
from server import FileServer

from wsl_images.cache import _records
from wsl_images.cache._derive import check_derived
from wsl_images.cache._paths import derived_path

REPO = Path(__file__).resolve().parents[1]
Served = tuple[FileServer, dict[str, Path]]

# Each process loads the model once all are ready, so the downloads really overlap.
LOADER = """
import pathlib, sys, time
import wsl_images
ready = pathlib.Path(sys.argv[2])
(ready / str(__import__("os").getpid())).touch()
while len(list(ready.iterdir())) < int(sys.argv[3]):
    time.sleep(0.01)
model = wsl_images.get_model("resnet18_ssl", checkpoint_path=sys.argv[1], progress=False)
print(wsl_images.download(sys.argv[1], progress=False), float(model.fc.weight.double().sum()))
"""


@pytest.fixture
def slow_server(served: Served) -> Iterator[tuple[FaultServer, Path]]:
    legacy = served[1]["legacy"]
    with FaultServer({legacy.name: legacy}) as srv:
        srv.faults[legacy.name] = Faults(rate=8e6)  # ~1.5 s for the file over 4 connections
        yield srv, legacy


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "WSL_IMAGES_PART_SIZE": "1", **extra}


def _run_loaders(url: str, tmp_path: Path, n: int, env: dict[str, str]) -> list[str]:
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOADER, url, str(ready), str(n)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [err for _, err in outs]
    return [out.strip() for out, _ in outs]


def test_concurrent_loads_download_once(
    slow_server: tuple[FaultServer, Path], isolated_cache: Path, tmp_path: Path
) -> None:
    server, legacy = slow_server
    outputs = _run_loaders(f"{server.url}/{legacy.name}", tmp_path, 3, _env())
    assert len(set(outputs)) == 1  # same file, same weights everywhere
    assert outputs[0].split()[0] == str(isolated_cache / legacy.name)
    # One download: the file once, plus what was in flight when the first response was cut.
    size = legacy.stat().st_size
    assert size <= server.bytes_sent[legacy.name] < 1.2 * size
    assert (isolated_cache / legacy.name).read_bytes() == legacy.read_bytes()
    assert _records.read(isolated_cache / legacy.name) is not None
    layout = check_derived(derived_path(isolated_cache / legacy.name))  # written whole
    assert layout is not None and layout.intact
    assert [p for p in isolated_cache.rglob("*.part")] == []


def test_without_the_lock_results_are_still_right(
    slow_server: tuple[FaultServer, Path], isolated_cache: Path, tmp_path: Path
) -> None:
    # As on a filesystem where locks do not work: each process may download, the last rename
    # wins, and every process still gets the whole, verified file.
    server, legacy = slow_server
    url = f"{server.url}/{legacy.name}"
    outputs = _run_loaders(url, tmp_path, 2, _env(WSL_IMAGES_NO_LOCK="1"))
    assert len(set(outputs)) == 1
    size = legacy.stat().st_size
    assert size <= server.bytes_sent[legacy.name] < 2 * 1.2 * size  # at most one per process
    assert (isolated_cache / legacy.name).read_bytes() == legacy.read_bytes()
    assert list(isolated_cache.glob(".*.part")) == []


def test_killed_download_leaves_nothing_behind(
    slow_server: tuple[FaultServer, Path], isolated_cache: Path
) -> None:
    server, legacy = slow_server
    url = f"{server.url}/{legacy.name}"
    code = f"import wsl_images; wsl_images.download({url!r}, progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=_env())
    deadline = time.monotonic() + 120
    while not list(isolated_cache.glob(".*.part")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(isolated_cache.glob(".*.part")), "the download never started"
    proc.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
    proc.wait()
    assert not (isolated_cache / legacy.name).exists()  # no partial file was ever published
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), check=False)
    assert done.returncode == 0
    assert (isolated_cache / legacy.name).read_bytes() == legacy.read_bytes()
    assert list(isolated_cache.glob(".*.part")) == []  # the dead process's temp file is gone
