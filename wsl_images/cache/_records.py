"""Verification records: a file fully hashed once is trusted while its identity holds.

A record is a small JSON file in the cache's bookkeeping folder (:func:`._paths.record_path`):
the file's full sha256 and its identity (size, mtime, ctime, inode) when it was last hashed.
Hashing a 3.3 GB file takes seconds, comparing a ``stat`` microseconds, so loads after the first
cost only that. Any
change of identity (a rewrite, a copy over it, a truncation, a byte flipped through the
filesystem; ctime cannot be set back by hand like mtime) makes the file hashed again, against
the recorded hash, before it is used. ``cache verify`` hashes everything regardless.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_file
from ._paths import meta_dir, record_path

__all__ = ["Record", "forget", "identity", "read", "remember", "sha256_of"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # reused buffer that stays in the CPU's caches
Identity = tuple[int, int, int, int]


@dataclass(frozen=True)
class Record:
    """What was known of a file when it was last hashed."""

    sha256: str
    identity: Identity | None  # (size, mtime_ns, ctime_ns, inode) at that moment

    def vouches_for(self, path: Path) -> bool:
        """True if the file is, by its identity, the one that was hashed."""
        try:
            return self.identity == identity(path)
        except OSError:
            return False


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in large chunks."""
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def identity(path: Path) -> Identity:
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def read(path: Path) -> Record | None:
    """The record of ``path``, whether or not it still vouches for the file; None if none."""
    try:
        data = json.loads(record_path(path).read_text())
        ident = data.get("identity")
        return Record(
            sha256=str(data["sha256"]),
            identity=tuple(int(x) for x in ident) if isinstance(ident, list) else None,  # type: ignore[arg-type]
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remember(path: Path, sha256: str) -> None:
    """Record that ``path``, as it is now, has this sha256. A failure only costs a re-hash."""
    data: dict[str, object] = {"sha256": sha256, "identity": list(identity(path))}
    record = record_path(path)
    try:
        meta_dir(path.parent, create=True)  # never through a symlink planted in the cache
        with atomic_file(record, durable=False) as tmp:
            os.write(tmp.fd, json.dumps(data).encode())
    except OSError as exc:
        log.warning("Could not write %s (%s): the file will be hashed again next time", path, exc)


def forget(path: Path) -> None:
    """Drop the record of ``path`` (the file is gone or was found bad)."""
    record_path(path).unlink(missing_ok=True)
