"""Atomic files: written beside their target, published whole with ``os.replace``, never half.

The one way wsl_images writes a file that someone else may read: downloads into the cache,
layouts, records, the CLI's ``--output``, sharded results and exports. A writer gets a temp
file of its own, ``.<name>~<host>~<pid>~<random>.part`` in the target's folder, created with
``O_EXCL | O_NOFOLLOW`` (a symlink planted there is never written through); on success it is
fsynced and renamed over the target (readers see the old file or the new one, nothing between),
on failure it is removed.

A process killed midway cannot remove its temp file, so the name says who wrote it: the first
atomic write into a folder (per process) removes the temp files whose writer is gone: a dead
process of this host (and PID namespace), or any writer silent for a day. A live writer's file
is left alone.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TempFile", "atomic_file", "atomic_folder", "cleanup_stale", "is_temp_name"]

log = logging.getLogger(__name__)

_TEMP = re.compile(r"\.(?P<name>.+)~(?P<host>[A-Za-z0-9_.-]+)~(?P<pid>\d+)~[0-9a-f]+\.part")
_SILENT_S = 24 * 3600  # a temp file untouched this long is abandoned, whoever wrote it
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_FLAGS |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_swept: set[str] = set()
_swept_lock = threading.Lock()


@dataclass(frozen=True)
class TempFile:
    """A temp file being written: its path and an open read/write descriptor."""

    path: Path
    fd: int


def is_temp_name(name: str) -> bool:
    """True for the name of an atomic write's temp file (or folder)."""
    return _TEMP.fullmatch(name) is not None


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike[str], *, durable: bool = True) -> Iterator[TempFile]:
    """A fresh temp file beside ``target``, renamed to ``target`` if the block succeeds.

    Write through ``fd`` (``open(tmp.fd, "w", closefd=False)`` for text) or ``path``; close any
    file object opened on it inside the block. ``durable``: fsync the data and the folder, so
    the published file survives a power cut (the cache and results need it; records do not).
    """
    path = Path(target)
    _sweep_once(path.parent)
    tmp = path.with_name(_temp_name(path.name))
    fd = os.open(tmp, _FLAGS, 0o666)  # the umask applies, as for any new file
    try:
        yield TempFile(tmp, fd)
        if durable:
            os.fsync(fd)
        os.replace(tmp, path)
        if durable:
            _fsync_folder(path.parent)
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp folder beside ``target`` for writers that make several files (an ONNX model and
    its external data): on success each file in it moves beside ``target``, the one named
    like ``target`` last, so its arrival means the rest is there; on failure all is removed.
    Readers see the old set or the new one only if the other files' names are new ones (an
    ONNX export names its data after its content: :mod:`wsl_images.onnx_data`); a name the old
    ``target`` reads too would be replaced before ``target`` is."""
    path = Path(target)
    _sweep_once(path.parent)
    folder = path.with_name(_temp_name(path.name))
    folder.mkdir()
    try:
        yield folder
        written = sorted(folder.iterdir(), key=lambda p: p.name == path.name)
        for item in written:
            with open(item, "rb") as f:
                os.fsync(f.fileno())
            os.replace(item, path.parent / item.name)
        _fsync_folder(path.parent)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cleanup_stale(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp files (and folders) of writers that are gone; returns their paths."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        match = _TEMP.fullmatch(entry.name)
        if match is None or not _abandoned(Path(entry.path), match["host"], int(match["pid"])):
            continue
        log.info("Removing %s, left by a writer that no longer runs", entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except FileNotFoundError:  # another process cleaned it first
            pass
    return removed


def _sweep_once(folder: Path) -> None:
    """Clean ``folder`` the first time this process writes there (folders of results can hold
    many files: one scan per process, not one per write)."""
    key = os.path.abspath(folder)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    cleanup_stale(folder)


def _temp_name(name: str) -> str:
    return f".{name}~{_host()}~{os.getpid()}~{secrets.token_hex(4)}.part"


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _host() -> str:
    """This host, plus its PID namespace on Linux: containers that share a hostname (host
    networking) and a cache volume must not judge each other's process ids."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"
    with contextlib.suppress(OSError):
        name += "." + re.sub(r"\D", "", os.readlink("/proc/self/ns/pid"))
    return name


def _abandoned(path: Path, host: str, pid: int) -> bool:
    """True when the writer of ``path`` is gone: a dead process here, or a day of silence."""
    if host == _host() and pid != os.getpid() and not pid_alive(pid):
        return True
    try:
        return time.time() - path.lstat().st_mtime > _SILENT_S
    except OSError:
        return False


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
