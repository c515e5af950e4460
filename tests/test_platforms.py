"""POSIX-only calls and their portable paths: each guard run with the call taken away, as on
macOS or Windows (the positional I/O of the cache and the loader: test_cache_portable.py,
test_models.py, test_loading.py; worker start methods: test_start.py; devices: test_devices.py).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from wsl_images._util import _atomic as atomic
from wsl_images._util import _temps as temps
from wsl_images.inference import default_workers

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_workers_follow_the_cores_without_sched_getaffinity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert (default_workers(CPU), default_workers(CUDA)) == (4, 15)  # a GPU: all cores but one
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: one worker, never zero
    assert (default_workers(CPU), default_workers(CUDA)) == (1, 1)


def test_workers_follow_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # a container limited to 4 of 64 cores
    assert (default_workers(CPU), default_workers(CUDA)) == (1, 3)


def test_host_id_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_proc(path: str) -> str:
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(os, "readlink", no_proc)  # macOS, Windows: no PID namespace to read
    monkeypatch.setattr(socket, "gethostname", lambda: "Anne's MacBook.local")
    assert temps.host_id() == "Anne_s_MacBook_local"
    name = temps.temp_name("x.pth")
    assert temps.is_temp_name(name) and "~Anne_s_MacBook_local~" in name


def test_atomic_writes_where_folders_cannot_be_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows opens no folder (no fsync of the rename): the file is published all the same."""
    real = os.open

    def no_folders(path: str | os.PathLike[str], flags: int, *args: object) -> int:
        if os.path.isdir(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_folders)
    with atomic.atomic_file(tmp_path / "out.bin") as tmp:
        os.write(tmp.fd, b"data")
    assert (tmp_path / "out.bin").read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_sizes_on_disk_without_st_blocks(tmp_path: Path) -> None:
    path = tmp_path / "f.part"
    path.write_bytes(b"x" * 1000)
    windows_stat = SimpleNamespace(st_size=1000, st_mode=os.stat(path).st_mode)  # no st_blocks
    assert temps._size_on_disk(path, windows_stat) == 1000  # type: ignore[arg-type]


def test_heartbeat_touches_by_name_without_descriptor_utime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "supports_fd", set())  # Windows: os.utime takes no descriptor
    monkeypatch.setattr(temps, "BEAT_S", 0.01)
    touched: list[object] = []
    beaten = threading.Event()

    def utime(where: object, *args: object, **kwargs: object) -> None:
        touched.append(where)
        beaten.set()

    monkeypatch.setattr(os, "utime", utime)
    path = tmp_path / "x.part"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        beat = temps.Heartbeat(path, fd)
        assert beaten.wait(timeout=60)  # a fact (it touched), not a duration
        beat.stop()
    finally:
        os.close(fd)
    assert touched and all(where == path for where in touched)
