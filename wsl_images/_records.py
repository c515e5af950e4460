"""Verification records: a file fully hashed once is trusted while its (size, mtime, inode) hold.

The record is a small JSON file ``.wsl-images/<name>.verified`` in the cache folder (one hidden
folder for our bookkeeping, so a cache shared with torch.hub and timm stays tidy). Hashing a 3.3 GB
file takes seconds; comparing a ``stat`` takes microseconds, so loads after the first cost only
that. Any change of size, modification time or inode (a rewrite, a copy over it, a truncation)
makes the record stale and the file is hashed again before use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from ._files import write_atomic

__all__ = ["forget", "meta_dir", "record_path", "recorded_sha256", "remember", "sha256_of"]

log = logging.getLogger(__name__)

_CHUNK = 8 << 20
_SUFFIX = ".verified"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in large chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def meta_dir(folder: Path, *, create: bool = False) -> Path:
    """The hidden folder of records and locks inside a cache folder.

    ``create`` makes it, replacing a symlink planted there: records and lock files are written
    (and lock files truncated), so they must never land outside the cache.
    """
    meta = folder / ".wsl-images"
    if create:
        if meta.is_symlink():
            log.warning("Replacing the symlink %s planted in the cache by a folder", meta)
            meta.unlink()
        meta.mkdir(exist_ok=True)
    return meta


def record_path(path: Path) -> Path:
    """Where the verification record of ``path`` lives."""
    return meta_dir(path.parent) / f"{path.name}{_SUFFIX}"


def _identity(path: Path) -> dict[str, int]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def recorded_sha256(path: Path) -> str | None:
    """The sha256 recorded for ``path`` if the record still matches the file, else None."""
    try:
        record = json.loads(record_path(path).read_text())
        identity = _identity(path)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in identity.items()):
        return None
    sha = record.get("sha256")
    return sha if isinstance(sha, str) else None


def remember(path: Path, sha256: str) -> None:
    """Record that ``path`` (as it is now) has this sha256. A failure only costs a re-hash."""
    text = json.dumps({**_identity(path), "sha256": sha256})
    try:
        meta_dir(path.parent, create=True)
        write_atomic(record_path(path), text.encode())
    except OSError as exc:
        log.warning("Could not write %s (%s): the file will be hashed again next time", path, exc)


def forget(path: Path) -> None:
    """Drop the record of ``path`` (the file is gone or was found bad)."""
    record_path(path).unlink(missing_ok=True)
