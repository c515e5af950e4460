"""Verification records: a file fully hashed once is trusted while its identity holds.

A record is a small JSON file in the cache's bookkeeping folder (:func:`._paths.record_path`):
the file's full sha256 and what identifies it as the file that was hashed. Hashing a 3.3 GB
file takes seconds, comparing a ``stat`` microseconds, so loads after the first cost only that.
:func:`trusted_sha256` trusts a file when

- its identity is the recorded one: size, mtime, ctime and inode. A rewrite, a copy over it, a
  truncation, a byte flipped through the file system change it (ctime cannot be set back by
  hand like mtime); or
- this process hashed it already, as it is now (identity unchanged): a cache whose records
  cannot be rewritten (a read-only mount) is hashed once per process, not on every load.

Anything else is hashed again, against the recorded hash, before it is used. That includes a
copy of a cached file (``cp``, ``cp -p``, ``rsync -a``: a cache folder copied to a cluster's
shared disk, with its records): another inode, whose size and mtime prove nothing of its bytes
(they are set by hand as easily as copied), so its record vouches for nothing until it is hashed.
Where the copy is writable, that first hash rewrites its record for the copy's own identity;
``cache verify`` (:func:`._manage.verify_cache`), which hashes everything regardless, does the
same for every file, so a copy verified before it is mounted read-only loads with no hash at all.
A read-only bind mount keeps inode and ctime: a folder verified in place stays trusted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .._util import atomic_file
from ._paths import Failures, meta_dir, record_path, remove_file

__all__ = [
    "Record",
    "file_sha256",
    "forget",
    "identity",
    "read",
    "remember",
    "sha256_of",
    "trusted_sha256",
]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # reused buffer that stays in the CPU's caches
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
Identity = tuple[int, int, int, int]
_AVOID = (
    " To load a read-only or copied cache without hashing, run `wsl-images cache verify` on "
    "{folder!r} while it is writable (after copying it, or before mounting it read-only): that "
    "records each file as it lies there."
)

_hashed: dict[str, tuple[Identity, str]] = {}  # path -> (identity, sha256) hashed by this process
_bad: dict[str, Identity] = {}  # path -> identity found bad by this process (its record stays?)
_hashed_lock = threading.Lock()


@dataclass(frozen=True)
class Record:
    """What was known of a file when it was last hashed."""

    sha256: str
    identity: Identity | None  # (size, mtime_ns, ctime_ns, inode) at that moment


def trusted_sha256(
    path: Path, record: Record | None = None, *, at: Path | None = None
) -> str | None:
    """The sha256 of ``path`` if its record (``record``, else read, from ``at`` if given) or
    this process vouches for it as it is now; None if it must be hashed (never on size and
    mtime alone: see above)."""
    try:
        now = identity(path)
    except OSError:
        return None
    key = os.path.abspath(path)
    with _hashed_lock:
        known, bad = _hashed.get(key), _bad.get(key)
    if known is not None and known[0] == now:
        return known[1]
    if bad == now:  # found bad here, and its record could not be dropped (read-only)
        return None
    record = record if record is not None else read(path, at=at)
    if record is None:
        return None
    return record.sha256 if record.identity == now else None


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in large chunks."""
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 of a file outside the cache (a user's checkpoint), hashed once per process
    while its identity holds: a run that needs it twice (the onnxruntime engine's graph key,
    a sharded run's ``run.json``) reads a 3.3 GB file once. Nothing is written anywhere."""
    key, before = os.path.abspath(path), identity(path)
    with _hashed_lock:
        known = _hashed.get(key)
    if known is not None and known[0] == before:
        return known[1]
    sha = sha256_of(path)
    if identity(path) == before:  # not changed while it was read: its hash is the file's
        with _hashed_lock:
            _hashed[key] = (before, sha)
    return sha


def identity(path: Path) -> Identity:
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def read(path: Path, *, at: Path | None = None) -> Record | None:
    """The record of ``path`` (kept at ``at``; default: :func:`._paths.record_path`), whether
    or not it still vouches for the file; None if none."""
    try:
        data = json.loads((at or record_path(path)).read_text())
        ident = data.get("identity")  # other keys (older versions wrote some) are ignored
        return Record(
            sha256=str(data["sha256"]),
            identity=tuple(int(x) for x in ident) if isinstance(ident, list) else None,  # type: ignore[arg-type]
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remember(path: Path, sha256: str, *, at: Path | None = None) -> None:
    """Record that ``path``, as it is now, has this sha256; this process remembers it even where
    the record cannot be written (a read-only cache: said at INFO level, with how to avoid the
    hash in the next process; it changes nothing for the load). Any other failure only costs a
    hash in the next process. ``at``: where the record is kept (default: the bookkeeping
    folder's :func:`._paths.record_path`; files of a derived folder keep theirs inside it)."""
    ident = identity(path)
    with _hashed_lock:
        _hashed[os.path.abspath(path)] = (ident, sha256)
        _bad.pop(os.path.abspath(path), None)
    record = at or record_path(path)
    try:
        if at is None:
            meta_dir(path.parent, create=True)  # never through a symlink planted in the cache
        with atomic_file(record, durable=False) as tmp:
            os.write(tmp.fd, json.dumps({"sha256": sha256, "identity": list(ident)}).encode())
    except OSError as exc:
        read_only = exc.errno in _READ_ONLY
        log.log(
            logging.INFO if read_only else logging.WARNING,
            "Could not write the record of %s (%s): this process trusts it now, the next one "
            "hashes it again.%s",
            path,
            exc.strerror or exc,
            _AVOID.format(folder=str(path.parent)) if read_only else "",
        )


def forget(path: Path, failed: Failures, *, bad: bool = False) -> None:
    """Drop what is known of ``path`` (the file is gone, or ``bad``: found bad): this process's
    memory of it and its record. A record that cannot be removed is added to ``failed``; a bad
    file is then distrusted by this process until it changes."""
    key = os.path.abspath(path)
    with _hashed_lock:
        _hashed.pop(key, None)
        if bad:
            with contextlib.suppress(OSError):
                _bad[key] = identity(path)
    remove_file(record_path(path), failed)
