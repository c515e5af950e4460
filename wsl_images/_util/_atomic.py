"""Atomic files: written beside their target, published whole with ``os.replace``, never half.

The one way wsl_images writes a file that someone else may read: downloads into the cache,
layouts, records, the CLI's ``--output``, sharded results and exports. A writer gets a temp
file of its own, ``.<name>~<host>~<pid>~<random>.part`` in the target's folder, created with
``O_EXCL | O_NOFOLLOW`` (a symlink planted there is never written through); on success it is
fsynced and renamed over the target (readers see the old file or the new one, nothing between),
on failure it is removed. The temp file is closed before the rename (Windows renames no open
file), and a rename refused because another process holds the target (Windows) is retried for a
moment, then reported with :class:`~wsl_images.errors.FileInUseError`.

A process killed midway cannot remove its temp file, so the name says who wrote it, and the
first atomic write into a folder (per process) removes the temp files whose writer is gone
(:mod:`._temps`: a dead process of this host; a writer with a heartbeat silent for 10
minutes, on any host; any other writer silent for a day). A live writer's file is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import FileInUseError
from ._temps import Heartbeat, cleanup_stale, is_temp_name, temp_name

__all__ = ["TempFile", "atomic_file", "atomic_folder", "cleanup_stale", "is_temp_name", "replace"]

log = logging.getLogger(__name__)

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


@contextlib.contextmanager
def atomic_file(
    target: str | os.PathLike[str], *, durable: bool = True, heartbeat: bool = False
) -> Iterator[TempFile]:
    """A fresh temp file beside ``target``, renamed to ``target`` if the block succeeds.

    Write through ``fd`` (``open(tmp.fd, "w", closefd=False)`` for text) or ``path``; close any
    file object opened on it inside the block. ``durable``: fsync the data and the folder, so
    the published file survives a power cut (the cache and results need it; records do not).
    ``heartbeat``: touch the temp file every 30 s while the block runs, so that if this process
    is killed, other hosts sharing the folder remove the file after 10 minutes instead of a day
    (long writes into shared folders: downloads).
    """
    path = Path(target)
    _sweep_once(path.parent)
    tmp = path.with_name(temp_name(path.name, heartbeat=heartbeat))
    fd = os.open(tmp, _FLAGS, 0o666)  # the umask applies, as for any new file
    is_open, beat = True, None
    try:
        beat = Heartbeat(tmp, fd) if heartbeat else None
        yield TempFile(tmp, fd)
        if beat is not None:
            beat.stop()
        if durable:
            os.fsync(fd)
        os.close(fd)  # before the rename: Windows renames no open file
        is_open = False
        replace(tmp, path)
        if durable:
            _fsync_folder(path.parent)
    finally:
        if beat is not None:
            beat.stop()  # before the close: it touches the file through fd
        if is_open:
            os.close(fd)
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp folder beside ``target`` for writers that make several files (an ONNX model and
    its external data): on success each file in it moves beside ``target``, the one named
    like ``target`` last, so its arrival means the rest is there; on failure all is removed.
    Readers see the old set or the new one only if the other files' names are new ones (an
    ONNX export names its data after its content: :mod:`..export._onnx_data`); a name the old
    ``target`` reads too would be replaced before ``target`` is."""
    path = Path(target)
    _sweep_once(path.parent)
    folder = path.with_name(temp_name(path.name))
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


def _sweep_once(folder: Path) -> None:
    """Clean ``folder`` the first time this process writes there (folders of results can hold
    many files: one scan per process, not one per write)."""
    key = os.path.abspath(folder)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    cleanup_stale(folder)


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
