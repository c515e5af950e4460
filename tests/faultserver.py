"""A fault-injecting HTTP/1.1 server on 127.0.0.1 for the download cache's tests and benchmark.

Serves files by name (``/NAME``) with Range support, keep-alive and ``os.sendfile`` for speed,
and injects, per file, the faults of real networks: failing statuses (with Retry-After), a
connection dropped at a byte offset, ranges ignored, a flipped byte, a wrong Content-Length, a
per-connection rate cap and a trickle. It counts requests, body bytes sent and Range headers.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from server import LoopbackServer

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_CHUNK = 1 << 20


@dataclass
class Faults:
    """What goes wrong when a file is requested (all off by default)."""

    status: int | None = None  # answer every request with this status (e.g. 404)
    fail_first: int = 0  # the first K requests get fail_status...
    fail_status: int = 503
    retry_after: str | None = None  # ...with this Retry-After header
    drop_at: int | None = None  # close the connection when the body reaches this file offset...
    drop_times: int = 1  # ...in this many responses
    ignore_range: bool = False  # always 200 with the whole file, no Accept-Ranges
    ignore_range_first: int = 0  # ...or only in the first K requests
    flip_at: int | None = None  # this file offset is served with its bits flipped
    length_delta: int = 0  # announced Content-Length minus the bytes really sent
    chunked_cut: bool = False  # 200 as chunked encoding, cut before the final chunk (once)
    rate: float | None = None  # bytes/s cap for each response (a long-haul CDN path)
    trickle_at: int | None = None  # from this offset, one byte per trickle_every seconds...
    trickle_every: float = 0.2
    trickle_times: int = 1  # ...in this many responses
    state: Counter[str] = field(default_factory=Counter)  # drops/trickles done so far


class FaultServer(LoopbackServer):
    """Serves ``files`` (name -> path) at ``self.url + "/" + name``."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = dict(files)
        self.faults: dict[str, Faults] = {}
        self.requests: Counter[str] = Counter()
        self.bytes_sent: Counter[str] = Counter()
        self.ranges: list[str | None] = []
        self.clients: set[tuple[str, int]] = set()  # (host, port) of every connection that asked
        self.by_client: Counter[tuple[str, int]] = Counter()  # body bytes sent per connection
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def reset_counts(self) -> None:
        self.requests.clear()
        self.bytes_sent.clear()
        self.ranges.clear()
        self.clients.clear()
        self.by_client.clear()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        name = h.path.lstrip("/")
        faults = self.faults.setdefault(name, Faults())
        with self.lock:
            index = self.requests[name]
            self.requests[name] += 1
            self.ranges.append(h.headers.get("Range"))
            self.clients.add(h.client_address)
        path = self.files.get(name)
        if path is None or faults.status is not None:
            return _empty(h, 404 if path is None else faults.status or 404)
        if index < faults.fail_first:
            extra = {"Retry-After": faults.retry_after} if faults.retry_after else {}
            return _empty(h, faults.fail_status, extra)
        size = path.stat().st_size
        start, end = 0, size - 1
        match = _RANGE.fullmatch(h.headers.get("Range") or "")
        if index < faults.ignore_range_first:
            match = None
        if match and not faults.ignore_range:
            start = int(match[1])
            end = min(int(match[2]), size - 1) if match[2] else size - 1
            if start >= size:
                return _empty(h, 416, {"Content-Range": f"bytes */{size}"})
        h.send_response(206 if match and not faults.ignore_range else 200)
        if match and not faults.ignore_range:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        if not faults.ignore_range:
            h.send_header("Accept-Ranges", "bytes")
        if faults.chunked_cut and not faults.state["cuts"]:
            faults.state["cuts"] += 1
            return self._send_chunked_cut(h, name, path)
        h.send_header("Content-Length", str(end - start + 1 + faults.length_delta))
        h.end_headers()
        self._send_body(h, name, path, start, end, faults)

    def _send_chunked_cut(self, h: BaseHTTPRequestHandler, name: str, path: Path) -> None:
        """The whole file in chunks, then the connection closes before the terminating chunk."""
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        data = path.read_bytes()
        for pos in range(0, len(data), _CHUNK):
            piece = data[pos : pos + _CHUNK]
            h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self._count(h, name, len(piece))
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)

    def _send_body(
        self, h: BaseHTTPRequestHandler, name: str, path: Path, start: int, end: int, f: Faults
    ) -> None:
        stop, drop = end + 1, False
        if f.drop_at is not None and start <= f.drop_at < stop and f.state["drops"] < f.drop_times:
            f.state["drops"] += 1
            stop, drop = f.drop_at, True
        began, pos = time.monotonic(), start
        with open(path, "rb") as src:
            try:
                while pos < stop:
                    if f.trickle_at is not None and pos >= f.trickle_at and self._trickles(f):
                        while pos < stop:  # one byte at a time, until the client gives up
                            h.wfile.write(_read_at(src, pos, 1, f))
                            self._count(h, name, 1)
                            pos += 1
                            time.sleep(f.trickle_every)
                        break
                    limit = stop if f.trickle_at is None or pos >= f.trickle_at else f.trickle_at
                    n = self._send_chunk(h, src, pos, min(limit, stop) - pos, f)
                    self._count(h, name, n)
                    pos += n
                    if f.rate:
                        time.sleep(max(0.0, (pos - start) / f.rate - (time.monotonic() - began)))
            except OSError:
                h.close_connection = True
                return
        if drop or f.length_delta:
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)

    def _send_chunk(self, h: Any, src: Any, pos: int, count: int, f: Faults) -> int:
        count = min(count, _CHUNK if not f.rate else max(1, min(_CHUNK, int(f.rate / 20))))
        if (f.flip_at is not None and pos <= f.flip_at < pos + count) or f.trickle_at is not None:
            data = _read_at(src, pos, count, f)
            h.wfile.write(data)
            return len(data)
        h.wfile.flush()
        return os.sendfile(h.connection.fileno(), src.fileno(), pos, count)

    def _trickles(self, f: Faults) -> bool:
        with self.lock:
            f.state["trickles"] += 1
            return f.state["trickles"] <= f.trickle_times

    def _count(self, h: BaseHTTPRequestHandler, name: str, n: int) -> None:
        with self.lock:
            self.bytes_sent[name] += n
            self.by_client[h.client_address] += n


def _read_at(src: Any, pos: int, count: int, f: Faults) -> bytes:
    # seek + read, not os.pread: tests remove os.pread to simulate Windows, and the server
    # runs in their process (src is this response's own file object).
    src.seek(pos)
    data = bytearray(src.read(count))
    if f.flip_at is not None and pos <= f.flip_at < pos + len(data):
        data[f.flip_at - pos] ^= 0xFF
    return bytes(data)


def _empty(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.send_header("Content-Length", "0")
    h.end_headers()
