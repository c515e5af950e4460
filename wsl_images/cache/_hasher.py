"""The sha256 of a file while it is being written, pieces in any order.

sha256 is sequential, so the hasher follows the contiguous written prefix of a download
(:meth:`Plan.frontier`) and reads it back from the page cache while later bytes still arrive.
sha256 releases the GIL, so it runs beside the writing threads and the digest is ready a moment
after the last byte. It also starts write-back every 64 MiB, so the fsync before publishing has
little left to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable

from ._fileio import PositionalFile
from ._http import AbortedError

__all__ = ["PrefixHasher"]

_READ = 8 << 20
_WAKE = 4 << 20  # wait for this many new bytes (or the end) rather than waking for every write
_SYNC_EVERY = 64 << 20
_WRITE_BACK_THREAD = "wsl-images-write-back"


class PrefixHasher:
    """Hashes ``file`` as ``frontier()`` (bytes written from the start, read with ``cond`` held,
    which writers notify) grows; :meth:`run` returns the hex digest."""

    def __init__(
        self,
        file: PositionalFile,
        cond: threading.Condition,
        frontier: Callable[[], int],
        abort: threading.Event,
    ) -> None:
        self.file, self.cond, self.frontier, self.abort = file, cond, frontier, abort
        self.finished = False  # set (with cond held) once every byte is in
        self.syncing: threading.Thread | None = None

    def finish(self) -> None:
        """Every byte is written (call with ``cond`` held): hash the rest and return."""
        self.finished = True
        self.cond.notify_all()

    def run(self) -> str:
        digest = hashlib.sha256()
        buf = bytearray(_READ)  # reused: no fresh pages to fault in for every read
        view = memoryview(buf)
        hashed = 0
        cond = self.cond
        while True:
            with cond:
                while (frontier := self.frontier()) - hashed < _WAKE:
                    if self.abort.is_set():
                        raise AbortedError
                    if self.finished:
                        break
                    cond.wait(0.5)
                if self.finished and frontier == hashed:
                    return digest.hexdigest()
            while hashed < frontier:
                n = self.file.read_into(view[: min(_READ, frontier - hashed)], hashed)
                if n == 0:  # pragma: no cover - the file is shorter than what was written
                    msg = f"{self.file.path} ended at byte {hashed}, before {frontier}"
                    raise OSError(msg)
                digest.update(view[:n])
                hashed += n
                if hashed % _SYNC_EVERY < n:
                    self._start_write_back()

    def join(self) -> None:
        """Wait for the last background write-back. Call it on every path, failures included:
        the thread uses the file's descriptor, which the caller closes next (an fsync of a
        closed descriptor fails with EBADF, or worse, syncs whatever file reused its number)."""
        if self.syncing is not None:
            self.syncing.join()

    def _start_write_back(self) -> None:
        """Flush written pages in the background, so the fsync before publishing is short."""
        if self.syncing is None or not self.syncing.is_alive():
            self.syncing = threading.Thread(
                target=_write_back, args=(self.file.fd,), name=_WRITE_BACK_THREAD, daemon=True
            )
            self.syncing.start()


def _write_back(fd: int) -> None:
    """fdatasync where there is one (Linux); fsync elsewhere (macOS and Windows lack it). Only
    a head start for the fsync before publishing: a failure here is that fsync's to report."""
    sync = getattr(os, "fdatasync", None) or os.fsync
    with contextlib.suppress(OSError):
        sync(fd)
