"""Fetch one URL into an open file: parallel Range parts when the server accepts ranges, one
resumable stream otherwise, hashed as the bytes land.

Parts are fixed-size pieces handed out in file order to a few connections. The first connection
runs alone for a moment; the others open only if it is slower than ``opts.fast_rate``: parallel
connections multiply a per-connection-limited rate (long paths, CDN caps), but on a fast link
(loopback, LAN) they only add threads and CPU work on few cores. A hasher thread
follows the contiguous written prefix and reads it back from the page cache, so the digest is
ready a moment after the last byte, with no second pass over the file. A single stream is
hashed inline.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import requests

from . import _stream
from ._http import (
    AbortedError,
    Backoff,
    RetriableError,
    TransferOptions,
    new_session,
    open_get,
    stream_body,
)
from ._stream import Bar, content_range, reserve, single

__all__ = ["fetch"]

log = logging.getLogger(__name__)

_HASH_READ = 8 << 20
_HASH_MIN = 4 << 20
_SYNC_EVERY = 64 << 20


class _RangesIgnoredError(Exception):
    """The server answered a Range request with the whole file (200)."""


def fetch(url: str, fd: int, opts: TransferOptions, bar: Bar) -> str:
    """Download ``url`` into ``fd`` (an empty file); return the sha256 hex digest."""
    session = new_session()
    resp, total = _probe(session, url, opts)
    if resp.status_code == 416:  # nothing at offset 0: the file is empty
        resp.close()
        return hashlib.sha256().hexdigest()
    if total is None:
        return single(session, url, fd, opts, bar, resp)
    reserve(fd, total)
    bar.reset(total=total)
    try:
        return _Parallel(url, fd, total, opts, bar).run(session, resp)
    except _RangesIgnoredError:
        log.info("%s stopped honouring Range requests: restarting as one stream", url)
        os.ftruncate(fd, 0)
        return single(session, url, fd, opts, bar, None)


def _probe(
    session: requests.Session, url: str, opts: TransferOptions
) -> tuple[requests.Response, int | None]:
    """First request, for the first piece: a 206 says ranges work and gives the total size."""
    backoff = Backoff(url, opts)
    while True:
        resp = None
        try:
            resp = open_get(session, url, opts, 0, opts.part_size - 1)
            total = content_range(resp, 0)[2] if resp.status_code == 206 else None
            return resp, total
        except RetriableError as exc:
            if resp is not None:
                resp.close()
            backoff.wait(exc)


@dataclass
class _Piece:
    start: int
    end: int  # inclusive
    pos: int  # next byte to write


class _Parallel:
    """Pieces of ``part_size`` bytes, fetched by up to ``opts.parts`` connections."""

    def __init__(self, url: str, fd: int, total: int, opts: TransferOptions, bar: Bar):
        self.url, self.fd, self.total, self.opts, self.bar = url, fd, total, opts, bar
        size = opts.part_size
        self.pieces = [_Piece(s, min(s + size, total) - 1, s) for s in range(0, total, size)]
        self.next_piece = 0
        self.hashed_piece = 0
        self.written = 0
        self.cond = threading.Condition()
        self.abort = threading.Event()
        self.syncing: threading.Thread | None = None

    def run(self, session: requests.Session, first: requests.Response) -> str:
        workers = min(self.opts.parts, len(self.pieces))
        with ThreadPoolExecutor(workers + 1, thread_name_prefix="wsl-images-dl") as pool:
            futures: list[Future[str | None]] = [pool.submit(self._hash)]
            futures.append(pool.submit(self._worker, session, first))  # keeps its connection
            try:
                if self._first_is_slow(futures, workers - 1):
                    futures += [
                        pool.submit(self._worker, new_session(), None) for _ in range(workers - 1)
                    ]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # Ctrl-C: stop the parts instead of finishing the download
                self._stop()
                raise
            if any(f.exception() is not None for f in done):
                self._stop()
                wait(futures)
                errors = [f.exception() for f in futures if f.exception() is not None]
                # Report the real failure, not the AbortedError of the parts that were stopped.
                raise next(e for e in errors if not isinstance(e, AbortedError))  # type: ignore[misc]
        if self.syncing is not None:
            self.syncing.join()
        return futures[0].result() or ""

    def _first_is_slow(self, futures: list[Future[str | None]], helpers: int) -> bool:
        """Watch the first connection every ``opts.ramp_s``: True (open the others) as soon as
        a window is below ``opts.fast_rate``; False if it finishes or fails alone."""
        if helpers <= 0:
            return False
        seen = 0
        while True:
            done, _ = wait(futures, timeout=self.opts.ramp_s, return_when=FIRST_EXCEPTION)
            with self.cond:
                written, left = self.written, self.next_piece < len(self.pieces)
            if done or not left:
                return False
            if written - seen < self.opts.fast_rate * self.opts.ramp_s:
                log.debug(
                    "%s: %d B/s on one connection, opening %d more",
                    self.url,
                    (written - seen) / self.opts.ramp_s,
                    helpers,
                )
                return True
            seen = written

    def _stop(self) -> None:
        self.abort.set()
        with self.cond:
            self.cond.notify_all()

    def _take(self) -> _Piece | None:
        with self.cond:
            if self.next_piece >= len(self.pieces):
                return None
            self.next_piece += 1
            return self.pieces[self.next_piece - 1]

    def _worker(self, session: requests.Session, first: requests.Response | None) -> None:
        while (piece := self._take()) is not None:
            self._fetch_piece(session, piece, first)
            first = None

    def _fetch_piece(
        self, session: requests.Session, piece: _Piece, resp: requests.Response | None
    ) -> None:
        backoff = Backoff(self.url, self.opts, self.abort)
        while piece.pos <= piece.end:
            before = piece.pos
            try:
                if resp is None:
                    resp = open_get(session, self.url, self.opts, piece.pos, piece.end)
                if resp.status_code == 200:
                    raise _RangesIgnoredError
                if resp.status_code == 416:
                    raise RetriableError("416 for a range inside the file")
                content_range(resp, piece.pos, self.total)
                stream_body(
                    resp,
                    self.opts,
                    lambda data: self._write(piece, data),
                    piece.end - piece.pos + 1,
                    self.abort,
                )
            except RetriableError as exc:
                if piece.pos > before:
                    backoff.progressed()
                backoff.wait(exc)
            finally:
                if resp is not None:
                    resp.close()
                resp = None

    def _write(self, piece: _Piece, data: bytes) -> None:
        _stream.pwrite_all(self.fd, data, piece.pos)
        with self.cond:
            piece.pos += len(data)
            self.written += len(data)
            self.cond.notify_all()
            self.bar.update(len(data))

    def _frontier(self) -> int:
        """End of the contiguous written prefix (call with the condition held)."""
        while self.hashed_piece < len(self.pieces):
            piece = self.pieces[self.hashed_piece]
            if piece.pos <= piece.end:
                return piece.pos
            self.hashed_piece += 1
        return self.total

    def _write_back(self) -> None:
        """Flush written pages in the background, so the fsync before publishing is short."""
        if self.syncing is None or not self.syncing.is_alive():
            self.syncing = threading.Thread(target=os.fdatasync, args=(self.fd,), daemon=True)
            self.syncing.start()

    def _hash(self) -> str | None:
        digest = hashlib.sha256()
        buf = bytearray(_HASH_READ)  # reused: no fresh pages to fault in for every read
        view = memoryview(buf)
        hashed = 0
        while hashed < self.total:
            with self.cond:
                # Wait for a few MiB (or the end) rather than waking for every small write.
                while (frontier := self._frontier()) - hashed < min(
                    _HASH_MIN, self.total - hashed
                ) and not self.abort.is_set():
                    self.cond.wait(0.5)
            if self.abort.is_set():
                raise AbortedError
            while hashed < frontier:
                n = os.preadv(self.fd, [view[: min(_HASH_READ, frontier - hashed)]], hashed)
                digest.update(view[:n])  # releases the GIL: runs beside the downloading threads
                hashed += n
                if hashed % _SYNC_EVERY < n:
                    self._write_back()
        return digest.hexdigest()
