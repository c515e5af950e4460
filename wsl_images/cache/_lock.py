"""The per-file lock: N processes sharing a cache fetch and convert a file once.

Correctness never depends on it (every write is a private temp file published atomically), so
where locks do not work (some NFS/Lustre setups) or hang (``WSL_IMAGES_NO_LOCK=1``) work goes on
without it and only bandwidth suffers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import filelock

from ._env import env_flag
from ._paths import lock_path, meta_dir

__all__ = ["file_lock"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(target: Path, *, path: Path | None = None) -> Iterator[None]:
    """Hold the per-file lock if the filesystem allows; go on without it if not. ``path``: the
    lock file, in a cache folder's bookkeeping folder (default: :func:`._paths.lock_path` of
    ``target``)."""
    if env_flag("WSL_IMAGES_NO_LOCK"):
        yield
        return
    path = path or lock_path(target)
    lock = filelock.FileLock(path)
    try:
        meta_dir(path.parent.parent, create=True)  # lock files live in a bookkeeping folder
        if path.is_symlink():  # filelock opens with O_TRUNC: never through a planted link
            path.unlink()
        try:
            lock.acquire(timeout=0.5)
        except filelock.Timeout:
            log.info("Waiting for another process fetching or converting %s", target.name)
            lock.acquire()
    except OSError as exc:  # e.g. a filesystem without locks: only bandwidth suffers
        log.warning("Could not lock %s (%s): going on without the lock", target, exc)
        yield
        return
    try:
        yield
    finally:
        lock.release()
