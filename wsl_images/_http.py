"""One HTTP GET at a time, with the cache's fault handling: timeouts, retry policy, stall watchdog.

Retries are our own loop rather than urllib3's ``Retry`` because a retry here must resume at
the byte where the last attempt stopped (a new ``Range``), which ``Retry`` cannot express.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests
import urllib3

from .errors import DownloadError

__all__ = [
    "AbortedError",
    "Backoff",
    "RetriableError",
    "TransferOptions",
    "new_session",
    "open_get",
    "stream_body",
]

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_READ = 1 << 20  # at most this many bytes per read; read1 returns what one recv gives
_MiB = 1 << 20


@dataclass(frozen=True)
class TransferOptions:
    """How downloads behave on a real network; ``from_env`` reads the ``WSL_IMAGES_*`` knobs."""

    connect_timeout: float = 10.0  # seconds to open a connection
    read_timeout: float = 60.0  # seconds of complete silence before a connection is dropped
    retries: int = 5  # failed attempts in a row (without new bytes) before giving up
    backoff: float = 1.0  # first wait between attempts; doubles each time, with +-50% jitter
    backoff_max: float = 60.0  # cap on any wait, Retry-After included
    stall_timeout: float = 30.0  # window of the stall watchdog (seconds)
    min_rate: int = 1024  # bytes/s a connection must average over that window, else reconnect
    parts: int = 8  # parallel Range connections for large files (1: one connection)
    part_size: int = 16 * _MiB  # bytes per Range request; files up to this size use one request
    fast_rate: float = 200e6  # bytes/s: a first connection this fast gets no parallel helpers...
    ramp_s: float = 0.25  # ...judged over windows of this many seconds (0: open all at once)

    @classmethod
    def from_env(cls) -> TransferOptions:
        """Defaults overridden by ``WSL_IMAGES_TIMEOUT``, ``_RETRIES``, ``_BACKOFF``, ``_STALL``,
        ``_PARTS`` and ``_PART_SIZE`` (MiB)."""
        env = os.environ.get
        opts = cls()
        if value := env("WSL_IMAGES_TIMEOUT"):
            opts = dataclasses.replace(
                opts, connect_timeout=float(value), read_timeout=float(value)
            )
        if value := env("WSL_IMAGES_RETRIES"):
            opts = dataclasses.replace(opts, retries=int(value))
        if value := env("WSL_IMAGES_BACKOFF"):
            opts = dataclasses.replace(opts, backoff=float(value))
        if value := env("WSL_IMAGES_STALL"):
            opts = dataclasses.replace(opts, stall_timeout=float(value))
        if value := env("WSL_IMAGES_PARTS"):
            opts = dataclasses.replace(opts, parts=max(1, int(value)))
        if value := env("WSL_IMAGES_PART_SIZE"):
            opts = dataclasses.replace(opts, part_size=max(1, int(float(value) * _MiB)))
        return opts


class RetriableError(Exception):
    """A transient failure: connection error, timeout, stall, short body, 408/429/5xx."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RetriesExhaustedError(DownloadError):
    """The server stayed unreachable (or kept failing) through every retry."""


class AbortedError(Exception):
    """Another part of the same download failed; this one stops quietly."""


def new_session() -> requests.Session:
    """A session that asks for the bytes as stored (no gzip: offsets and hashes are on them)."""
    session = requests.Session()
    session.headers.update({"Accept-Encoding": "identity", "User-Agent": "wsl-images"})
    return session


def open_get(
    session: requests.Session, url: str, opts: TransferOptions, start: int, end: int | None
) -> requests.Response:
    """Send one GET (with ``Range`` unless it starts at 0 with no end); 200, 206 or 416 come back.

    408, 429 and 5xx raise :class:`RetriableError`; any other status is final (DownloadError).
    """
    headers = {}
    if start or end is not None:
        headers["Range"] = f"bytes={start}-{'' if end is None else end}"
    try:
        resp = session.get(
            url,
            headers=headers,
            stream=True,
            timeout=(opts.connect_timeout, opts.read_timeout),
        )
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise RetriableError(f"connection failed ({exc})") from exc
    code = resp.status_code
    if code in (200, 206, 416):
        return resp
    resp.close()
    if code in _RETRY_STATUS:
        after = _retry_after(resp.headers.get("Retry-After"))
        raise RetriableError(f"HTTP {code} {resp.reason}", retry_after=after)
    hint = {
        401: "the server wants credentials; use a mirror (WSL_IMAGES_MIRROR) you can reach",
        403: "access was refused; check the URL or use a mirror (WSL_IMAGES_MIRROR)",
        404: "there is no file at this URL; check it (and WSL_IMAGES_MIRROR if set)",
    }.get(code, "this is not a transient error, so it was not retried; check the URL")
    msg = f"Download of {url!r} failed: HTTP {code} {resp.reason}: {hint}."
    raise DownloadError(msg)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def stream_body(
    resp: requests.Response,
    opts: TransferOptions,
    sink: Callable[[bytes], None],
    expected: int | None,
    abort: threading.Event | None = None,
) -> None:
    """Feed the body to ``sink`` as it arrives; RetriableError on a drop, stall or short body."""
    got = window = 0
    window_start = time.monotonic()
    while True:
        if abort is not None and abort.is_set():
            raise AbortedError
        try:
            data = resp.raw.read1(_READ)
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            if expected is not None:
                msg = f"body shorter than announced: {got} of {expected} bytes, then {exc}"
            else:
                msg = f"connection dropped after {got} bytes of this response ({exc})"
            raise RetriableError(msg) from exc
        if not data:
            break
        if expected is not None and got + len(data) > expected:
            msg = f"body longer than the {expected} bytes announced"
            raise RetriableError(msg)
        sink(data)  # outside the try: a disk error (ENOSPC) is not a network error
        got += len(data)
        window += len(data)
        elapsed = time.monotonic() - window_start
        if elapsed >= opts.stall_timeout:
            if window < opts.min_rate * elapsed:
                msg = f"stalled: {window} bytes in {elapsed:.0f} s (below {opts.min_rate} B/s)"
                raise RetriableError(msg)
            window, window_start = 0, time.monotonic()
    if expected is not None and got < expected:
        raise RetriableError(f"body shorter than announced: {got} of {expected} bytes")


class Backoff:
    """Exponential backoff with jitter between attempts; gives up after ``opts.retries``."""

    def __init__(self, url: str, opts: TransferOptions, abort: threading.Event | None = None):
        self.url, self.opts, self.abort = url, opts, abort
        self.failures = 0

    def progressed(self) -> None:
        """New bytes arrived: a long download over a flaky link keeps its whole retry budget."""
        self.failures = 0

    def wait(self, exc: RetriableError) -> None:
        self.failures += 1
        if self.failures > self.opts.retries:
            msg = (
                f"Download of {self.url!r} failed after {self.opts.retries} retries: {exc}. "
                "Check the network (or set WSL_IMAGES_MIRROR to a mirror you can reach) and "
                "try again."
            )
            raise RetriesExhaustedError(msg) from exc
        delay = self.opts.backoff * 2 ** (self.failures - 1) * random.uniform(0.5, 1.5)
        if exc.retry_after is not None:
            delay = exc.retry_after
        delay = min(delay, self.opts.backoff_max)
        log.info("%s: %s; retrying in %.1f s", self.url, exc, delay)
        if self.abort is not None:
            if self.abort.wait(delay):
                raise AbortedError
        else:
            time.sleep(delay)
