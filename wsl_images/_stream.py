"""Shared pieces of a transfer, and the single-stream download (servers without ranges).

One stream is hashed inline as it is written; after a drop it resumes with ``Range`` and
restarts cleanly from byte 0 if the server ignores that.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
from typing import Protocol

import requests

from ._http import Backoff, RetriableError, TransferOptions, open_get, stream_body

__all__ = ["Bar", "content_range", "pwrite_all", "reserve", "single"]

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class Bar(Protocol):
    """The part of tqdm we use: one bar per file, reset when a download starts over."""

    def update(self, n: float | None = 1) -> bool | None: ...

    def reset(self, total: float | None = None) -> None: ...


def content_range(
    resp: requests.Response, start: int, total: int | None = None
) -> tuple[int, int, int]:
    """(first, last, total) of a 206 that must begin at ``start``, match its Content-Length and
    (when known) the total size seen before: a file replaced on the server mid-download fails."""
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
    length = resp.headers.get("Content-Length")
    if match is None:
        msg = f"206 without a usable Content-Range ({resp.headers.get('Content-Range')})"
        raise RetriableError(msg)
    first, last, size = map(int, match.groups())
    if first != start or last >= size or (length is not None and int(length) != last - first + 1):
        msg = f"206 for bytes {start}- answered Content-Range {match.group(0)}, length {length}"
        raise RetriableError(msg)
    if total is not None and size != total:
        msg = f"the file changed on the server during the download ({total} -> {size} bytes)"
        raise RetriableError(msg)
    return first, last, size


def reserve(fd: int, total: int) -> None:
    """Check and reserve the space up front, so a full disk fails before any byte is fetched."""
    st = os.fstatvfs(fd)
    free = st.f_bavail * st.f_frsize
    if total > free:
        raise OSError(errno.ENOSPC, f"{total} bytes needed, {free} free")
    try:
        os.posix_fallocate(fd, 0, total)
    except OSError as exc:  # unsupported here (some network filesystems): writes will tell
        if exc.errno == errno.ENOSPC:
            raise
    except AttributeError:  # pragma: no cover - not on every platform
        pass


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def single(
    session: requests.Session,
    url: str,
    fd: int,
    opts: TransferOptions,
    bar: Bar,
    resp: requests.Response | None,
) -> str:
    """One stream, resumed with ``Range`` after a drop; restarted if the server ignores it."""
    stream = _Stream(fd, bar)
    backoff = Backoff(url, opts)
    while True:
        before = stream.pos
        try:
            if resp is None:
                resp = open_get(session, url, opts, stream.pos, None)
            expected = stream.align(resp)
            if expected != 0:
                stream_body(resp, opts, stream.write, expected)
            return stream.digest.hexdigest()
        except RetriableError as exc:
            if stream.pos > before:
                backoff.progressed()
            backoff.wait(exc)
        finally:
            if resp is not None:
                resp.close()
            resp = None


class _Stream:
    """The state of a single-stream download: position, announced total, running digest."""

    def __init__(self, fd: int, bar: Bar) -> None:
        self.fd, self.bar = fd, bar
        self.pos = 0
        self.total: int | None = None
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        pwrite_all(self.fd, data, self.pos)
        self.digest.update(data)
        self.pos += len(data)
        self.bar.update(len(data))

    def align(self, resp: requests.Response) -> int | None:
        """Bytes this response will carry (None: unknown), after lining it up with our file."""
        if resp.status_code == 416 and self.pos > 0:
            # "416 on an already complete part": everything is here, if the sizes agree.
            match = re.fullmatch(r"bytes \*/(\d+)", resp.headers.get("Content-Range", ""))
            size = int(match[1]) if match else self.total
            if size in (None, self.pos) and self.total in (None, self.pos):
                return 0
        if resp.status_code == 416:
            raise RetriableError("416 Range Not Satisfiable for a range inside the file")
        if resp.status_code == 206:
            first, _, total = content_range(resp, self.pos, self.total)
            self.total = total
            return total - first
        if self.pos > 0:  # the server ignored our Range: start over, cleanly
            log.info("server ignored Range at byte %d: restarting from 0", self.pos)
            os.ftruncate(self.fd, 0)
            self.pos, self.digest = 0, hashlib.sha256()
        length = resp.headers.get("Content-Length")
        self.total = int(length) if length is not None else None
        if self.total is not None:
            reserve(self.fd, self.total)
        self.bar.reset(total=self.total)
        return self.total
