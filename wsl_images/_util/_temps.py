"""Temp files of atomic writes: their names, their writers' heartbeats, which are abandoned.

A writer's temp file is ``.<name>~<host>~<pid>~<random>.part`` beside its target
(:mod:`wsl_images._util._atomic`). A process killed midway cannot remove it, so the name says who
wrote it, and :func:`cleanup_stale` removes the temp files whose writer is gone:

- a dead process of this host (and PID namespace): asked directly;
- a writer that keeps a heartbeat (``~hb`` before the random part: downloads into the cache)
  and has not touched its file for :data:`BEAT_LOST_S` (10 minutes; it touches it every
  :data:`BEAT_S`, 30 s, even while it waits for the network). This is what frees a shared cache
  (NFS, Lustre) of the preallocated files of downloads killed on *other* hosts, whose processes
  cannot be asked;
- any other writer silent for a day (results, exports: they keep no heartbeat).

Silence is measured by the clock that stamps the files, not this host's: on a network file
system the server sets the times, and a host whose clock runs minutes ahead of it would
otherwise judge a live download on another host abandoned. That clock is read from a probe file
made in the folder (this host's clock where none can be made: a read-only folder, where nothing
could be removed anyway). A live writer's file is never removed: it is never silent that long.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BEAT_LOST_S",
    "BEAT_S",
    "SILENT_S",
    "Heartbeat",
    "TempEntry",
    "cleanup_stale",
    "host_id",
    "is_temp_name",
    "pid_alive",
    "temp_files",
    "temp_name",
]

log = logging.getLogger(__name__)

_TEMP = re.compile(
    r"\.(?P<name>.+)~(?P<host>[A-Za-z0-9_.-]+)~(?P<pid>\d+)~(?P<beat>hb)?[0-9a-f]+\.part"
)
SILENT_S = 24 * 3600  # a temp file of a writer without heartbeat untouched this long: abandoned
BEAT_S = 30.0  # a heartbeat writer touches its temp file this often...
BEAT_LOST_S = 600.0  # ...so one untouched this long (20 beats missed) is abandoned, on any host
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_FLAGS |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def temp_name(name: str, *, heartbeat: bool = False) -> str:
    """A fresh temp name for a writer of ``name`` in this process."""
    beat = "hb" if heartbeat else ""
    return f".{name}~{host_id()}~{os.getpid()}~{beat}{secrets.token_hex(4)}.part"


def is_temp_name(name: str) -> bool:
    """True for the name of an atomic write's temp file (or folder)."""
    return _TEMP.fullmatch(name) is not None


@dataclass(frozen=True)
class TempEntry:
    """A temp file (or folder) in a folder, and what is known of its writer."""

    path: Path
    host: str  # the writer's host (and PID namespace)
    pid: int
    heartbeat: bool  # its writer touches it every BEAT_S while it runs
    size: int  # bytes it takes on disk (a preallocated download: the whole file)
    silent_s: float  # seconds since it was last written or touched, by the file system's clock
    abandoned: bool  # its writer is gone: cleanup_stale removes it


def temp_files(folder: str | os.PathLike[str]) -> list[TempEntry]:
    """The temp files in ``folder``, sorted by name, each judged (the writer's own included)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    found: list[TempEntry] = []
    now: float | None = None
    for entry in entries:
        match = _TEMP.fullmatch(entry.name)
        if match is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:  # removed meanwhile
            continue
        if now is None:
            now = _fs_now(Path(folder))
        host, pid, beat = match["host"], int(match["pid"]), match["beat"] is not None
        silent = max(0.0, now - st.st_mtime)
        gone = host == host_id() and pid != os.getpid() and not pid_alive(pid)
        abandoned = gone or silent > (BEAT_LOST_S if beat else SILENT_S)
        size = _size_on_disk(Path(entry.path), st)
        found.append(TempEntry(Path(entry.path), host, pid, beat, size, silent, abandoned))
    return found


def cleanup_stale(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp files (and folders) of writers that are gone; returns their paths."""
    removed: list[Path] = []
    for temp in temp_files(folder):
        if not temp.abandoned:
            continue
        log.info("Removing %s, left by a writer that no longer runs", temp.path)
        try:
            if temp.path.is_dir() and not temp.path.is_symlink():
                shutil.rmtree(temp.path)
            else:
                os.unlink(temp.path)
            removed.append(temp.path)
        except FileNotFoundError:  # another process cleaned it first
            pass
        except OSError as exc:  # a read-only folder; Windows: still open somewhere
            log.info("Could not remove %s (%s)", temp.path, exc)
    return removed


class Heartbeat:
    """Touches a writer's temp file every :data:`BEAT_S` until :meth:`stop`, so that other
    hosts, which cannot ask whether this process runs, see it alive however long it waits."""

    def __init__(self, path: Path, fd: int) -> None:
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(path, fd), name="wsl-images-heartbeat", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop touching the file; returns once the thread is done with it (idempotent)."""
        self._stopped.set()
        self._thread.join()

    def _run(self, path: Path, fd: int) -> None:
        # Through the descriptor where the platform allows (no name lookup on a network file
        # system); times left out: "now" by the clock that stamps files (on NFS, the server's).
        where: int | Path = fd if os.utime in os.supports_fd else path
        while not self._stopped.wait(BEAT_S):
            with contextlib.suppress(OSError):
                os.utime(where)


def _fs_now(folder: Path) -> float:
    """Now by the clock that stamps files in ``folder``: the time of a probe file made there
    (this host's clock where none can be made)."""
    probe = folder / temp_name("clock")
    try:
        fd = os.open(probe, _FLAGS, 0o600)
    except OSError:
        return time.time()
    try:
        with contextlib.suppress(OSError):
            os.utime(fd if os.utime in os.supports_fd else probe)  # "now", set by the server
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)


def _size_on_disk(path: Path, st: os.stat_result) -> int:
    """Bytes allocated (a preallocated file: all of it, though little was written)."""
    if path.is_dir() and not path.is_symlink():
        return sum(
            _size_on_disk(Path(root) / name, os.lstat(Path(root) / name))
            for root, _, names in os.walk(path)
            for name in names
        )
    blocks = getattr(st, "st_blocks", None)  # POSIX (sparse files: less than the size)
    return blocks * 512 if blocks is not None else st.st_size


def host_id() -> str:
    """This host, plus its PID namespace on Linux: containers that share a hostname (host
    networking) and a cache volume must not judge each other's process ids."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"
    with contextlib.suppress(OSError):
        name += "." + re.sub(r"\D", "", os.readlink("/proc/self/ns/pid"))
    return name


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (Windows: without signalling it)."""
    if os.name == "nt":  # pragma: no cover - exercised through _alive_windows with a fake API
        return _alive_windows(pid, _WindowsApi())
    try:
        os.kill(pid, 0)  # signal 0 tests for existence on POSIX; on Windows it would kill
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's live process
        return True
    return True


class _WindowsApi:  # pragma: no cover - Windows only
    """The three kernel32 calls that tell whether a process runs."""

    def __init__(self) -> None:
        import ctypes

        self._ctypes = ctypes
        self._k = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]

    def open(self, pid: int) -> int | None:
        handle = self._k.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        return int(handle) if handle else None

    def access_denied(self) -> bool:
        return bool(self._ctypes.get_last_error() == 5)  # type: ignore[attr-defined,unused-ignore]

    def exit_code(self, handle: int) -> int | None:
        code = self._ctypes.c_ulong()
        ok = self._k.GetExitCodeProcess(handle, self._ctypes.byref(code))
        return int(code.value) if ok else None

    def close(self, handle: int) -> None:
        self._k.CloseHandle(handle)


_STILL_ACTIVE = 259


def _alive_windows(pid: int, api: _WindowsApi) -> bool:
    """OpenProcess + GetExitCodeProcess: a process with a handle and no exit code runs."""
    handle = api.open(pid)
    if handle is None:
        return api.access_denied()  # it exists, but is another user's
    try:
        code = api.exit_code(handle)
        return code is None or code == _STILL_ACTIVE
    finally:
        api.close(handle)
