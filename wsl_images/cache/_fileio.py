"""Positional reads and writes of one file by many threads, on every platform.

A download's threads write their pieces and the hasher reads the written prefix, each at its
own offset, on one file. Where ``os.pwrite`` and ``os.preadv`` (or ``os.pread``) exist (Linux,
macOS, the BSDs) the offset goes with the call and every thread shares the one descriptor.
Windows' Python has none of them: there each thread gets a handle of its own on the file (opened
on first use, closed with the file) and seeks it; a handle's position is its own, so no lock is
needed, and the seek is skipped when the handle is already where the next call starts (the
common case: a piece is written, and the prefix read, in order).
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from types import TracebackType

__all__ = ["PositionalFile"]


class PositionalFile:
    """``path``, open as ``fd`` (read/write), for positional I/O from any thread.

    ``portable=None`` picks the fast calls where they exist; True forces the per-thread handles.
    Use as a context manager (or call :meth:`close`): it closes the handles it opened, never
    ``fd``, which stays its owner's.
    """

    def __init__(self, path: Path, fd: int, *, portable: bool | None = None) -> None:
        self.path, self.fd = path, fd
        self._pwrite = None if portable else getattr(os, "pwrite", None)
        self._preadv = None if portable else getattr(os, "preadv", None)
        self._pread = None if portable else getattr(os, "pread", None)
        self._local = threading.local()
        self._handles: list[io.FileIO] = []
        self._lock = threading.Lock()

    def __enter__(self) -> PositionalFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write_at(self, data: memoryview, offset: int) -> None:
        """Write all of ``data`` at ``offset``."""
        if self._pwrite is not None:
            while data:
                written = self._pwrite(self.fd, data, offset)
                data, offset = data[written:], offset + written
            return
        handle = self._at(offset)
        while data:
            written = handle.write(data)
            data, offset = data[written:], offset + written
        self._local.pos = offset

    def read_into(self, view: memoryview, offset: int) -> int:
        """Read up to ``len(view)`` bytes at ``offset`` into ``view``; how many were read."""
        if self._preadv is not None:
            return int(self._preadv(self.fd, [view], offset))
        if self._pread is not None:  # no preadv (some macOS builds): one copy more
            data = self._pread(self.fd, len(view), offset)
            view[: len(data)] = data
            return len(data)
        handle = self._at(offset)
        n = handle.readinto(view) or 0
        self._local.pos = offset + n
        return n

    def close(self) -> None:
        """Close the per-thread handles (the fast path opened none)."""
        with self._lock:
            handles, self._handles = self._handles, []
        for handle in handles:
            handle.close()

    def _at(self, offset: int) -> io.FileIO:
        """This thread's handle, positioned at ``offset``."""
        handle: io.FileIO | None = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._open()
            self._local.handle, self._local.pos = handle, 0
        if self._local.pos != offset:
            handle.seek(offset)
            self._local.pos = offset
        return handle

    def _open(self) -> io.FileIO:
        """A new handle on the very file ``fd`` is open on: if the name was swapped for another
        file (or a link to one) meanwhile, nothing is written through it."""
        handle = io.FileIO(self.path, "r+")  # binary, unbuffered; closed by close()
        try:
            if not os.path.samestat(os.fstat(handle.fileno()), os.fstat(self.fd)):
                msg = f"{self.path} is no longer the file being written"
                raise OSError(msg)
        except BaseException:
            handle.close()
            raise
        with self._lock:
            self._handles.append(handle)
        return handle
