"""Positional I/O by many threads: the fast calls and the per-thread handles give one file."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from wsl_images.cache._fileio import PositionalFile

BLOCK = 4096


@pytest.mark.parametrize("portable", [False, True], ids=["fast", "per-thread-handles"])
def test_threads_writing_and_reading_at_their_offsets(tmp_path: Path, portable: bool) -> None:
    data = os.urandom(64 * BLOCK)
    path = tmp_path / "f.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    order = list(range(0, len(data), BLOCK))
    random.Random(0).shuffle(order)
    try:
        with PositionalFile(path, fd, portable=portable) as file:

            def write(start: int) -> None:
                view = memoryview(data)[start : start + BLOCK]
                file.write_at(view[:100], start)  # two calls per block: in order, then a seek
                file.write_at(view[100:], start + 100)

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(write, order))
            back = bytearray(len(data))
            view = memoryview(back)

            def read(start: int) -> int:
                return file.read_into(view[start : start + BLOCK], start)

            with ThreadPoolExecutor(4) as pool:
                assert sum(pool.map(read, order)) == len(data)
            assert file.read_into(memoryview(bytearray(10)), len(data)) == 0  # at the end
            assert (len(file._handles) > 0) == portable
        assert file._handles == []  # closed with the file; fd stays open for its owner
        os.fstat(fd)
    finally:
        os.close(fd)
    assert bytes(back) == data and path.read_bytes() == data


def test_a_swapped_name_is_never_written_through(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.replace(tmp_path / "f.bin", tmp_path / "moved.bin")
        (tmp_path / "f.bin").write_bytes(b"someone else's")
        with (
            PositionalFile(path, fd, portable=True) as file,
            pytest.raises(OSError, match="no longer"),
        ):
            file.write_at(memoryview(b"data"), 0)
    finally:
        os.close(fd)
    assert (tmp_path / "f.bin").read_bytes() == b"someone else's"
