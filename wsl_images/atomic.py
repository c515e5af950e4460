"""Atomic files: written beside their target, published whole with ``os.replace``, never half.

The one way wsl_images writes a file that someone else may read: downloads into the cache,
layouts, records, the CLI's ``--output``, sharded results and exports. A writer gets a temp
file of its own, ``.<name>~<host>~<pid>~<random>.part`` in the target's folder, created with
``O_EXCL | O_NOFOLLOW`` (a symlink planted there is never written through); on success it is
fsynced and renamed over the target (readers see the old file or the new one, nothing between),
on failure it is removed. The temp file is closed before the rename (Windows renames no open
file), and a rename refused because another process holds the target (Windows) is retried for a
moment, then reported with :class:`~wsl_images.errors.FileInUseError`.

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

from .errors import FileInUseError

__all__ = ["TempFile", "atomic_file", "atomic_folder", "cleanup_stale", "is_temp_name", "replace"]

log = logging.getLogger(__name__)

_TEMP = re.compile(r"\.(?P<name>.+)~(?P<host>[A-Za-z0-9_.-]+)~(?P<pid>\d+)~[0-9a-f]+\.part")
_SILENT_S = 24 * 3600  # a temp file untouched this long is abandoned, whoever wrote it
_REPLACE_TRIES = 8  # a refused os.replace is tried this often...
_REPLACE_WAIT_S = 0.05  # ...waiting this long after the first refusal, doubling...
_REPLACE_WAIT_MAX_S = 0.5  # ...up to this: about 2 s in all
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
    is_open = True
    try:
        yield TempFile(tmp, fd)
        if durable:
            os.fsync(fd)
        os.close(fd)  # before the rename: Windows renames no open file
        is_open = False
        replace(tmp, path)
        if durable:
            _fsync_folder(path.parent)
    finally:
        if is_open:
            os.close(fd)
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp folder beside ``target`` for writers that make several files (an ONNX model and
    its external ``.data``): on success each file in it moves beside ``target``, the one named
    like ``target`` last, so its arrival means the rest is there; on failure all is removed."""
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
            replace(item, path.parent / item.name)
        _fsync_folder(path.parent)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def replace(source: Path, target: Path) -> None:
    """``os.replace(source, target)``, retried for a moment while it is refused.

    Windows refuses to replace a file that another process holds open or maps (a model loaded
    from it; an antivirus, indexer or backup scan, which lets go within moments):
    PermissionError. After about two seconds of refusals, :class:`FileInUseError` names the file
    and what to do; ``source`` stays for the caller to remove.
    """
    wait, waited = _REPLACE_WAIT_S, 0.0
    for attempt in range(_REPLACE_TRIES):
        try:
            os.replace(source, target)
            return
        except PermissionError as exc:
            refused = exc
            if attempt + 1 < _REPLACE_TRIES:
                time.sleep(wait)
                waited, wait = waited + wait, min(2 * wait, _REPLACE_WAIT_MAX_S)
    msg = (
        f"Cannot replace {str(target)!r} with its new version ({refused}), refused for "
        f"{waited:.1f} s: another process holds it open or mapped (on Windows: a model loaded "
        "from it, a viewer, an antivirus or backup scan), or the folder's permissions forbid "
        "it. Close that process or free the model (del model), then try again. The new version "
        "was discarded."
    )
    raise FileInUseError(msg) from refused


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
        except OSError as exc:  # a read-only folder; Windows: still open somewhere
            log.info("Could not remove %s (%s)", entry.path, exc)
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
