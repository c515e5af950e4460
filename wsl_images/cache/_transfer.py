"""Fetch one URL into an open file, hashed as the bytes land.

The first request asks for ``bytes=0-``. If the server answers 206, the file is fetched by up to
``opts.parts`` connections taking pieces in file order (:mod:`._pieces`); the first connection
runs alone for a moment, and the others open only if it is slower than ``opts.fast_rate``:
parallel connections multiply a per-connection limited rate (long paths, CDN caps), while on a
fast link they would only add threads and CPU work. A server that answers 200 gets one resumable
stream; one that stops honouring ``Range`` midway makes the download restart cleanly from byte 0.

A hasher thread (:mod:`._hasher`) follows the contiguous written prefix, so receive, write and
hash overlap and the digest is ready a moment after the last byte.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections import deque
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ._fileio import PositionalFile
from ._hasher import PrefixHasher
from ._http import (
    AbortedError,
    RetriableError,
    RetriesExhaustedError,
    TransferOptions,
    content_range,
    new_session,
    open_get,
    retrying,
    stream_body,
)
from ._pieces import Piece, Plan

if TYPE_CHECKING:
    import requests

__all__ = ["Bar", "NoSpaceError", "fetch", "reserve"]

log = logging.getLogger(__name__)

_CPU_BOUND = 0.5  # a receiving thread busier than this (cores) is limited by CPU, not network
_UNKNOWN = 1 << 62  # the size of a body whose length was not announced
_EMPTY_SHA256 = hashlib.sha256().hexdigest()


class Bar(Protocol):
    """The part of tqdm we use: one bar per file, reset when a download starts over."""

    def update(self, n: float | None = 1) -> bool | None: ...

    def reset(self, total: float | None = None) -> None: ...


class NoSpaceError(OSError):
    """The disk is full (ENOSPC, EDQUOT); ``needed`` is the file's size (None: not announced)."""

    def __init__(self, code: int, detail: str, needed: int | None) -> None:
        super().__init__(code, detail)
        self.needed = needed


class _RestartError(Exception):
    """The server answered a ranged request with the whole file (200): start over with it."""

    def __init__(self, response: requests.Response, cause: str) -> None:
        super().__init__(f"the server ignored Range after: {cause}")
        self.response, self.cause = response, cause


def fetch(url: str, path: Path, fd: int, opts: TransferOptions, bar: Bar) -> str:
    """Download ``url`` into ``path``, an empty file open as ``fd``; return the sha256 hex digest.

    Every session, response, handle and thread it opens is closed or joined when it returns or
    raises.
    """
    with new_session() as session, PositionalFile(path, fd) as file:
        resp = retrying(lambda: _probe(session, url, opts), url=url, opts=opts)
        restarts = 0
        while True:
            transfer = _Transfer(url, file, opts, bar, session)
            try:
                return transfer.run(resp)
            except NoSpaceError:
                resp.close()
                raise
            except OSError as exc:
                resp.close()
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise NoSpaceError(exc.errno, exc.strerror or str(exc), transfer.size) from exc
            except _RestartError as restart:
                # Each restart throws away what arrived: it counts against the retry budget.
                restarts += 1
                resp = restart.response
                if restarts > opts.retries:
                    resp.close()
                    msg = (
                        f"Download of {url!r} failed after {opts.retries} retries: the server "
                        "ignores Range requests, so each drop restarts the file; the last: "
                        f"{restart.cause}"
                    )
                    raise RetriesExhaustedError(msg) from restart
                log.info("%s ignored a Range request: restarting from byte 0", url)
                os.ftruncate(fd, 0)
            except BaseException:
                resp.close()  # unread if the failure came before a worker took it: close it
                raise


def _probe(session: requests.Session, url: str, opts: TransferOptions) -> requests.Response:
    """The first request, for the whole file: a 206 says ranges work and gives the size."""
    resp = open_get(session, url, opts, 0, None)
    if resp.status_code == 206:
        try:
            content_range(resp, 0)
        except RetriableError:
            resp.close()
            raise
    return resp


class _Transfer:
    """One attempt at the whole file, from a first response at byte 0."""

    def __init__(
        self,
        url: str,
        file: PositionalFile,
        opts: TransferOptions,
        bar: Bar,
        session: requests.Session,
    ) -> None:
        self.url, self.file, self.opts, self.bar, self.session = url, file, opts, bar, session
        self.abort = threading.Event()
        self.ranged = False  # the server honours Range: pieces can be handed to helpers
        self.plan = Plan(_UNKNOWN, piece_size=_UNKNOWN, min_piece=opts.min_piece)
        self.received = 0
        self.receiver_cpu = 0.0  # CPU seconds of the latest receiving thread (time.thread_time)
        self.streaming = 0  # responses being read right now
        self.helpers = False  # other connections take pieces: ask for closed ranges only
        self.last_failure = ""

    def run(self, resp: requests.Response) -> str:
        if resp.status_code == 416:  # nothing at offset 0: the file is empty
            resp.close()
            return _EMPTY_SHA256
        total = self._size(resp)
        if total is not None:
            reserve(self.file, total)
            # About four pieces per connection: the last ones are small and end together.
            size = max(
                self.opts.min_piece, min(self.opts.part_size, total // (4 * self.opts.parts))
            )
            self.plan = Plan(
                total,
                piece_size=size if self.ranged else total,
                min_piece=self.opts.min_piece,
                min_split_s=self.opts.min_split_s,
            )
        self.bar.reset(total=total)
        with self.plan.cond:
            first = self.plan.take()
        if first is None:  # an empty body announced with Content-Length: 0
            resp.close()
            return _EMPTY_SHA256
        workers = self.opts.parts if self.ranged else 1
        hasher = PrefixHasher(self.file, self.plan.cond, self.plan.frontier, self.abort)
        try:
            with ThreadPoolExecutor(workers + 1, thread_name_prefix="wsl-images-dl") as pool:
                hashing = pool.submit(hasher.run)
                futures = [pool.submit(self._worker, self.session, first, resp)]
                try:
                    if workers > 1 and self._first_is_slow(futures):
                        self.helpers = True
                        futures += [pool.submit(self._helper) for _ in range(workers - 1)]
                    self._wait(futures)
                    with self.plan.cond:
                        self._check_complete()
                        hasher.finish()
                    return hashing.result()
                except BaseException:  # a failure, or Ctrl-C: stop every thread, then report
                    self._stop()
                    raise
        finally:
            hasher.join()  # its write-back uses the descriptor, which our caller closes next

    @property
    def size(self) -> int | None:
        """The file's size, once known."""
        return None if self.plan.total == _UNKNOWN else self.plan.total

    def _size(self, resp: requests.Response) -> int | None:
        """The file's size from the first response (None: not announced)."""
        if resp.status_code == 206:
            self.ranged = True
            return content_range(resp, 0)[2]
        length = resp.headers.get("Content-Length")
        return int(length) if length is not None else None

    def _first_is_slow(self, futures: list[Future[None]]) -> bool:
        """Watch the first connection: True (open the others) once, over the last
        ``opts.ramp_s``, it ran below ``opts.fast_rate`` while its thread used under half a
        core: limited by the network, which more connections multiply, not by its CPU, which
        they would only share. Sampled three times per window, so one slice in which a busy
        machine did not schedule it does not decide. False if it finishes alone."""
        if self.opts.ramp_s <= 0:
            return self._worth_helpers()
        samples = deque([(time.monotonic(), self.received, self.receiver_cpu)])
        while self._worth_helpers():
            done, _ = wait(futures, timeout=self.opts.ramp_s / 3, return_when=FIRST_EXCEPTION)
            if done:
                return False
            now = (time.monotonic(), self.received, self.receiver_cpu)
            if not self.streaming:  # waiting to retry says nothing about the link: start over
                samples = deque([now])
                continue
            samples.append(now)
            wall = now[0] - samples[0][0]
            if wall < self.opts.ramp_s:
                continue
            rate = (now[1] - samples[0][1]) / wall
            busy = (now[2] - samples[0][2]) / wall
            samples.popleft()
            if rate < self.opts.fast_rate and busy < _CPU_BOUND:
                log.debug("%s: %.0f B/s on one connection: opening helpers", self.url, rate)
                return True
        return False

    def _worth_helpers(self) -> bool:
        with self.plan.cond:
            return self.plan.work_left() >= 2 * self.opts.min_piece

    def _wait(self, futures: list[Future[None]]) -> None:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        errors = [f.exception() for f in done if f.exception() is not None]
        if errors:
            self._stop()
            wait(futures)
            errors = [f.exception() for f in futures if f.exception() is not None]
            # Report the real failure, not the AbortedError of the parts that were stopped.
            raise next(e for e in errors if not isinstance(e, AbortedError))  # type: ignore[misc]

    def _check_complete(self) -> None:
        """All bytes are in: fix the size of a body whose length was not announced."""
        plan = self.plan
        if plan.total == _UNKNOWN:
            piece = plan.pieces[0]
            plan.total = plan.next = piece.end = piece.written
        if not plan.done():  # pragma: no cover - every worker ended without an error
            msg = f"download of {self.url!r} ended with bytes missing"
            raise RetriableError(msg)

    def _stop(self) -> None:
        self.abort.set()
        with self.plan.cond:
            self.plan.cond.notify_all()

    def _helper(self) -> None:
        """A connection opened beside the first: a session of its own, closed at its end."""
        with new_session() as session:
            self._worker(session, None, None)

    def _worker(
        self, session: requests.Session, piece: Piece | None, resp: requests.Response | None
    ) -> None:
        """Fetch ``piece`` (on ``resp`` if given), then take pieces until none is left."""
        while True:
            if piece is None:
                with self.plan.cond:
                    piece = self.plan.take()
                if piece is None:
                    return
            self._fetch(session, piece, resp)
            piece, resp = None, None

    def _fetch(
        self, session: requests.Session, piece: Piece, resp: requests.Response | None
    ) -> None:
        def attempt() -> None:
            nonlocal resp
            r, resp = resp, None
            try:
                if r is None:
                    with self.plan.cond:
                        start, last = piece.written, piece.end - 1
                        # Alone, ask for the rest of the file: one response, no gaps to refill.
                        alone = not self.helpers and piece.end == self.plan.next
                    if start > last:  # finished, or cut to what arrived before the failure
                        return
                    open_end = not self.ranged or alone
                    r = open_get(session, self.url, self.opts, start, None if open_end else last)
                expected = self._align(r, piece)
                if expected != 0:
                    self._receive(r, piece, expected)
            except _RestartError:
                r = None  # handed over: the restart reads it
                raise
            except RetriableError as exc:
                self.last_failure = str(exc)
                raise
            finally:
                if r is not None:
                    r.close()  # closes the connection if the body was not read to the end

        retrying(
            attempt,
            url=self.url,
            opts=self.opts,
            progress=lambda: piece.written,
            abort=self.abort,
            reached=True,
        )

    def _align(self, resp: requests.Response, piece: Piece) -> int | None:
        """Bytes ``resp`` carries from ``piece.written`` on (None: unknown), after checking that
        they are the ones asked for; 0 when everything is already here."""
        if resp.status_code == 416 and not self.ranged and piece.written > 0:
            # All bytes of a body of unknown length arrived, and the resume asked past the end.
            match = re.fullmatch(r"bytes \*/(\d+)", resp.headers.get("Content-Range", ""))
            if match is None or int(match[1]) == piece.written:
                piece.end = piece.written
                return 0
        if resp.status_code == 416:
            raise RetriableError("416 Range Not Satisfiable for a range inside the file")
        if resp.status_code == 200:
            if piece.written > 0 or self.ranged:
                raise _RestartError(resp, self.last_failure or "a ranged request")
            length = resp.headers.get("Content-Length")
            return int(length) if length is not None else None
        known = None if self.plan.total == _UNKNOWN else self.plan.total
        first, last, size = content_range(resp, piece.written, known)
        if not self.ranged:  # a single stream resumed with Range: now the size is known
            self.plan.total = self.plan.next = piece.end = size
        return last - first + 1

    def _receive(self, resp: requests.Response, piece: Piece, expected: int | None) -> None:
        with self.plan.cond:
            extendable = self.ranged and piece.written + (expected or 0) == self.plan.total
        with self.plan.cond:
            self.streaming += 1
        try:
            view_ok = stream_body(
                resp,
                self.opts,
                lambda data: self._write(piece, data, extendable),
                expected,
                self.abort,
            )
        finally:
            with self.plan.cond:
                self.streaming -= 1
        with self.plan.cond:
            short = view_ok and self.ranged and piece.written < piece.end
        if short:  # pragma: no cover - stream_body checks the announced length
            msg = f"response ended at byte {piece.written}, before {piece.end}"
            raise RetriableError(msg)

    def _write(self, piece: Piece, data: bytes, extendable: bool) -> bool:
        """Write received bytes at their place; False (stop reading) once the piece is done."""
        view = memoryview(data)
        while view:
            with self.plan.cond:
                offset, count = self.plan.claim(piece, len(view), extendable=extendable)
            if count == 0:
                return False
            self.file.write_at(view[:count], offset)
            with self.plan.cond:
                piece.written += count
                self.received += count
                self.plan.cond.notify_all()
            self.receiver_cpu = time.thread_time()
            self.bar.update(count)
            view = view[count:]
        return True


def reserve(file: PositionalFile, total: int) -> None:
    """Check and reserve the space up front, so a full disk fails before any byte is fetched."""
    free = shutil.disk_usage(file.path.parent).free
    if total > free:
        raise NoSpaceError(errno.ENOSPC, f"{total} bytes needed, {free} free", total)
    allocate = getattr(os, "posix_fallocate", None)  # not on macOS or Windows: writes will tell
    if allocate is None:
        return
    try:
        allocate(file.fd, 0, total)
    except OSError as exc:  # unsupported here (some network filesystems): writes will tell
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpaceError(exc.errno, exc.strerror or str(exc), total) from exc
