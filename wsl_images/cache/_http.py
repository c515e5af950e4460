"""HTTP for the cache: options, one GET, a body stream with a stall watchdog, the one retry loop.

Retries are our own loop rather than urllib3's ``Retry`` because a retry here resumes at the byte
where the last attempt stopped (a new ``Range``), which ``Retry`` cannot express. One loop,
:func:`retrying`, serves every request of a download: the probe, each parallel piece and a
single stream. Failures come in two kinds: *unreachable* (the name does not resolve, the network
is unreachable, the connection is refused), which will not heal in a minute and gets one quick
retry (a DNS blip in a cluster is real), and *transient* (timeouts, dropped connections, 408,
429, 5xx), which gets exponential backoff with jitter and honours ``Retry-After``.

``requests`` is imported when a download starts, not when the cache is imported, so a cached
file loads (and the CLI starts) without it.
"""

from __future__ import annotations

import dataclasses
import email.utils
import errno
import http.client
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from ..errors import DownloadError, UnreachableError
from ._env import env_float, env_int

if TYPE_CHECKING:
    import requests

__all__ = [
    "AbortedError",
    "RetriableError",
    "RetriesExhaustedError",
    "TransferOptions",
    "content_range",
    "new_session",
    "open_get",
    "retrying",
    "stream_body",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_READ = 1 << 20  # at most this many bytes per read; read1 returns what one recv gives
_MiB = 1 << 20
_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH}
_QUICK_RETRY_S = 0.5  # the one retry of an unreachable host comes this soon
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


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
    parts: int = 8  # connections for one file (1: a single connection)
    part_size: int = 16 * _MiB  # the largest piece one request asks for
    min_piece: int = _MiB // 2  # no piece is cut smaller (a new request costs a round trip)
    min_split_s: float = 0.2  # a piece is split only if it would take longer than this
    fast_rate: float = 100e6  # bytes/s: a first connection this fast gets no helpers...
    ramp_s: float = 0.075  # ...judged over the last this many seconds (0: open all at once)

    @classmethod
    def from_env(cls) -> TransferOptions:
        """Defaults overridden by ``WSL_IMAGES_TIMEOUT``, ``_RETRIES``, ``_BACKOFF``, ``_STALL``,
        ``_PARTS`` and ``_PART_SIZE`` (MiB); a bad value raises :class:`InvalidInputError`
        naming the variable and what it takes."""
        timeout = env_float("WSL_IMAGES_TIMEOUT", minimum=0, above=True, takes=_TAKES["timeout"])
        retries = env_int("WSL_IMAGES_RETRIES", minimum=0, takes=_TAKES["retries"])
        backoff = env_float("WSL_IMAGES_BACKOFF", minimum=0, above=False, takes=_TAKES["backoff"])
        stall = env_float("WSL_IMAGES_STALL", minimum=0, above=True, takes=_TAKES["stall"])
        parts = env_int("WSL_IMAGES_PARTS", minimum=1, takes=_TAKES["parts"])
        mib = env_float("WSL_IMAGES_PART_SIZE", minimum=0, above=True, takes=_TAKES["part_size"])
        opts = cls()
        if timeout is not None:
            opts = dataclasses.replace(opts, connect_timeout=timeout, read_timeout=timeout)
        if retries is not None:
            opts = dataclasses.replace(opts, retries=retries)
        if backoff is not None:
            opts = dataclasses.replace(opts, backoff=backoff)
        if stall is not None:
            opts = dataclasses.replace(opts, stall_timeout=stall)
        if parts is not None:
            opts = dataclasses.replace(opts, parts=parts)
        if mib is not None:
            opts = dataclasses.replace(opts, part_size=max(1, int(mib * _MiB)))
        return opts


# What each knob takes, for the error a bad value raises.
_TAKES = {
    "timeout": "a number of seconds above 0 (the connect and read timeout, e.g. 30)",
    "retries": "a whole number, 0 or more (failed attempts in a row before giving up, e.g. 5)",
    "backoff": "a number of seconds, 0 or more (the first wait between attempts, e.g. 1)",
    "stall": "a number of seconds above 0 (the stall-watchdog window, e.g. 30)",
    "parts": "a whole number of connections, 1 or more (e.g. 8; 1: a single connection)",
    "part_size": "a size in MiB above 0 (the largest piece one request asks for, e.g. 16)",
}


class RetriableError(Exception):
    """A failure worth another attempt. ``unreachable`` names why the host cannot be reached
    (name not resolved, network unreachable, connection refused), None for transient faults."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, unreachable: str | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable


class RetriesExhaustedError(DownloadError):
    """The server kept failing through every retry."""


class AbortedError(Exception):
    """Another part of the same download failed (or was interrupted); this one stops quietly."""


def new_session() -> requests.Session:
    """A session that asks for the bytes as stored (no gzip: offsets and hashes are on them)."""
    import requests

    session = requests.Session()
    session.headers.update({"Accept-Encoding": "identity", "User-Agent": "wsl-images"})
    return session


def open_get(
    session: requests.Session, url: str, opts: TransferOptions, start: int, end: int | None
) -> requests.Response:
    """GET ``bytes=start-end`` (``end`` inclusive; None: to the end of the file).

    200, 206 and 416 come back; 408, 429 and 5xx raise :class:`RetriableError`; any other
    status is final (:class:`DownloadError` saying what it means here).
    """
    import requests

    headers = {"Range": f"bytes={start}-{'' if end is None else end}"}
    try:
        resp = session.get(
            url, headers=headers, stream=True, timeout=(opts.connect_timeout, opts.read_timeout)
        )
    except (requests.ConnectionError, requests.Timeout) as exc:
        why = None if isinstance(exc, requests.Timeout) else _unreachable(exc)
        raise RetriableError(f"connection failed ({exc})", unreachable=why) from exc
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


def _unreachable(exc: BaseException) -> str | None:
    """Why the host cannot be reached, with the system's own words, if the error's chain says
    so ("its name does not resolve ([Errno -2] Name or service not known)"); else None.

    requests wraps urllib3's errors, which wrap the socket's: walk args, ``reason`` and causes.
    """
    todo, seen = [exc], set()
    while todo:
        err = todo.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        why = None
        if isinstance(err, socket.gaierror):  # EAI_NONAME, and EAI_AGAIN when DNS is down
            why = "its name does not resolve"
        elif isinstance(err, OSError) and err.errno == errno.ECONNREFUSED:
            why = "the connection was refused"
        elif isinstance(err, OSError) and err.errno in _UNREACHABLE_ERRNOS:
            why = "the network is unreachable"
        if why is not None:
            return f"{why} ({err})"
        linked = (*err.args, getattr(err, "reason", None), err.__cause__, err.__context__)
        todo.extend(x for x in linked if isinstance(x, BaseException))
    return None


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
    sink: Callable[[bytes], bool],
    expected: int | None,
    abort: threading.Event | None = None,
) -> bool:
    """Feed the body to ``sink`` as it arrives, until the end or until ``sink`` returns False.

    Returns True when the whole body arrived. RetriableError on a drop, a stall (below
    ``opts.min_rate`` over ``opts.stall_timeout``: read timeouts never fire on a trickle) or a
    body shorter or longer than ``expected``.
    """
    import requests
    import urllib3

    read1 = _read1(resp.raw)
    got = window = 0
    window_start = time.monotonic()
    while True:
        if abort is not None and abort.is_set():
            raise AbortedError
        try:
            data = read1(_READ)
        except (
            urllib3.exceptions.HTTPError,
            requests.RequestException,
            http.client.HTTPException,  # urllib3 1.x: http.client's IncompleteRead, unwrapped
            OSError,
        ) as exc:
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
        got += len(data)
        if not sink(data):  # outside the try: a disk error (ENOSPC) is not a network error
            return False
        window += len(data)
        elapsed = time.monotonic() - window_start
        if elapsed >= opts.stall_timeout:
            if window < opts.min_rate * elapsed:
                msg = f"stalled: {window} bytes in {elapsed:.0f} s (below {opts.min_rate} B/s)"
                raise RetriableError(msg)
            window, window_start = 0, time.monotonic()
    if expected is not None and got < expected:
        raise RetriableError(f"body shorter than announced: {got} of {expected} bytes")
    return True


def _read1(raw: Any) -> Callable[[int], bytes]:
    """The body's reader that returns what one receive gave (at most ``n`` bytes).

    urllib3 2 has ``read1``; urllib3 1.x (which ``requests>=2.28`` allows) has not, but the
    ``http.client`` response it wraps (``_fp``) has, with the same meaning: requests asks urllib3
    for the raw bytes (no decoding), so reading below it gives the same bytes. A plain
    ``read(n)`` would block until ``n`` bytes arrive, and the stall watchdog could not see a
    trickle. Chosen once per response, so the urllib3 2 path is unchanged.
    """
    read1 = getattr(raw, "read1", None)
    if read1 is not None:
        return read1  # type: ignore[no-any-return]
    fp = getattr(raw, "_fp", None)
    if fp is not None and hasattr(fp, "read1"):
        return fp.read1  # type: ignore[no-any-return]
    return raw.read  # type: ignore[no-any-return]  # neither: whole reads (a coarser watchdog)


def retrying(
    attempt: Callable[[], T],
    *,
    url: str,
    opts: TransferOptions,
    progress: Callable[[], int] = lambda: 0,
    abort: threading.Event | None = None,
    reached: bool = False,
) -> T:
    """``attempt()`` until it returns, retrying :class:`RetriableError` as its kind deserves.

    ``progress()`` counts bytes received: an attempt that brought new bytes resets the count
    of failures in a row, so a long download over a flaky link keeps its whole budget.
    ``reached``: the host has answered before (a refusal then means a restart: be patient).
    """
    failures = 0
    while True:
        before = progress()
        try:
            return attempt()
        except RetriableError as exc:
            if progress() > before:
                failures, reached = 0, True
            failures += 1
            if exc.unreachable is None:
                reached = True
            delay = _delay(exc, failures, url, opts, quick=not reached)
            log.info("%s: %s; retrying in %.1f s", url, exc, delay)
        if abort is not None:
            if abort.wait(delay):
                raise AbortedError
        else:
            time.sleep(delay)


def _delay(
    exc: RetriableError, failures: int, url: str, opts: TransferOptions, quick: bool
) -> float:
    """The wait before attempt ``failures + 1``, or the error that ends the download."""
    if quick and exc.unreachable is not None:
        if failures > 1:
            host = urlsplit(url).hostname or url
            msg = f"Cannot reach {host}: {exc.unreachable}."
            raise UnreachableError(msg) from exc
        return min(_QUICK_RETRY_S, opts.backoff_max)
    if failures > opts.retries:
        msg = (
            f"Download of {url!r} failed after {opts.retries} retries: {exc}. Check the network "
            "(or set WSL_IMAGES_MIRROR to a mirror you can reach) and try again."
        )
        raise RetriesExhaustedError(msg) from exc
    if exc.retry_after is not None:
        return min(exc.retry_after, opts.backoff_max)
    wait: float = opts.backoff * 2 ** (failures - 1) * random.uniform(0.5, 1.5)
    return min(wait, opts.backoff_max)
