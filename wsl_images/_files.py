"""Files in the cache folder: safe names, per-process temp files, atomic publication, cleanup.

Temp files are ``.<name>~<host>~<pid>~<random>.part``: the host and process id let any later
process tell a dead process's leftover (removed) from a live one's download in progress (kept).
They are created with ``O_EXCL | O_NOFOLLOW``, so a symlink planted in the cache is never written
through; ``os.replace`` replaces a planted link instead of following it.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import InvalidInputError

__all__ = [
    "cleanup_stale",
    "filename_from_url",
    "open_temp",
    "publish",
    "temp_files",
    "write_atomic",
]

log = logging.getLogger(__name__)

_TEMP = re.compile(r"\.(?P<name>.+)~(?P<host>[A-Za-z0-9_-]+)~(?P<pid>\d+)~[0-9a-f]+\.part")
_FOREIGN_STALE_S = 24 * 3600  # another host's temp file untouched this long is abandoned
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC


def filename_from_url(url: str) -> str:
    """The cache file name for an http(s) URL: its last path segment, which must be a plain name."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        msg = f"Unsupported URL {url!r}: only http:// and https:// URLs can be downloaded."
        raise InvalidInputError(msg)
    name = unquote(parts.path.rsplit("/", 1)[-1])
    # A name from a URL must never leave the cache folder or be a hidden/special entry.
    bad = not name or name.startswith(".") or any(c in name for c in "/\\\0~")
    if bad or name.endswith((".part", ".lock")):
        msg = (
            f"Cannot derive a cache file name from URL {url!r}: its path must end in a plain "
            "file name (not empty, not hidden, no slashes or '~', not .part/.lock)."
        )
        raise InvalidInputError(msg)
    return name


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"


def open_temp(target: Path) -> tuple[int, Path]:
    """A new temp file of this process beside ``target``: (fd, path)."""
    name = f".{target.name}~{_host()}~{os.getpid()}~{secrets.token_hex(4)}.part"
    path = target.with_name(name)
    return os.open(path, _FLAGS, 0o644), path


def publish(fd: int, tmp: Path, target: Path) -> None:
    """Make ``tmp`` durable and atomically the file at ``target`` (readers see all or nothing)."""
    os.fsync(fd)
    os.replace(tmp, target)
    try:  # the rename itself survives a crash only once the folder is synced
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on folders
        pass


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file through a temp file and ``os.replace`` (never through a symlink)."""
    fd, tmp = open_temp(path)
    try:
        os.write(fd, data)
        os.replace(tmp, path)
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)


def temp_files(folder: Path) -> list[tuple[Path, str, str, int]]:
    """Temp files of ours in ``folder``: (path, target name, host, pid)."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        match = _TEMP.fullmatch(entry.name)
        if match:
            found.append((Path(entry.path), match["name"], match["host"], int(match["pid"])))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def is_stale(path: Path, host: str, pid: int) -> bool:
    """True for a temp file whose writer is gone (dead pid here, or long silent elsewhere)."""
    if host == _host():
        return pid != os.getpid() and not _alive(pid)
    try:
        return time.time() - path.stat().st_mtime > _FOREIGN_STALE_S
    except OSError:
        return False


def cleanup_stale(folder: Path) -> int:
    """Remove temp files left by killed processes; returns how many. Live downloads are kept."""
    removed = 0
    for path, _, host, pid in temp_files(folder):
        if is_stale(path, host, pid):
            log.info("Removing %s, left by a process that no longer runs", path)
            path.unlink(missing_ok=True)
            removed += 1
    return removed
