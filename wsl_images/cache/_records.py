"""Verification records: a file fully hashed once is trusted while its identity holds.

A record is a small JSON file in the cache's bookkeeping folder (:func:`._paths.record_path`):
the file's full sha256 and what identifies it as the file that was hashed. Hashing a 3.3 GB
file takes seconds, comparing a ``stat`` microseconds, so loads after the first cost only that.
:func:`trusted_sha256` trusts a file when

- its identity is the recorded one: size, mtime, ctime and inode. A rewrite, a copy over it, a
  truncation, a byte flipped through the file system change it (ctime cannot be set back by
  hand like mtime); or
- it is a faithful copy of the recorded file (``cp -p``, ``rsync -a``: a cache folder copied to
  a cluster's shared disk, with its records): another file (inode or device) with the recorded
  size and mtime to the nanosecond, whose sampled blocks (16 x 64 KiB spread over the file) hash
  as recorded. A copy keeps no more of the original's identity than that; a different file
  with the same size and mtime fails the samples. When the record can be rewritten it then
  takes the copy's full identity, so a later change in place is caught by ctime as above; or
- this process hashed it already, as it is now (identity unchanged): a read-only cache whose
  records cannot be rewritten (a plain ``cp`` drops the times) is hashed once per process, not
  on every load.

Anything else is hashed again, against the recorded hash, before it is used.
``cache verify`` hashes everything regardless.
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

__all__ = ["Record", "forget", "identity", "read", "remember", "sha256_of", "trusted_sha256"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # reused buffer that stays in the CPU's caches
_SAMPLES = 16  # blocks hashed to tell a faithful copy from another file of the same size and time
_SAMPLE = 64 << 10
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
Identity = tuple[int, int, int, int]

_hashed: dict[str, tuple[Identity, str]] = {}  # path -> (identity, sha256) hashed by this process
_bad: dict[str, Identity] = {}  # path -> identity found bad by this process (its record stays?)
_hashed_lock = threading.Lock()


@dataclass(frozen=True)
class Record:
    """What was known of a file when it was last hashed."""

    sha256: str
    identity: Identity | None  # (size, mtime_ns, ctime_ns, inode) at that moment
    device: int | None = None  # st_dev at that moment
    sample: str | None = None  # sha256 of the sampled blocks (see _sample)

    def vouches_for(self, path: Path) -> bool:
        """True if the file is, by its full identity, the one that was hashed."""
        try:
            return self.identity == identity(path)
        except OSError:
            return False

    def is_copy_of_it(self, path: Path) -> bool:
        """True if ``path`` is a faithful copy of the file that was hashed: another file with
        its size and mtime (to the nanosecond) and the same sampled blocks."""
        if self.identity is None or self.sample is None:
            return False
        try:
            st = os.stat(path)
        except OSError:
            return False
        size, mtime, _, inode = self.identity
        moved = (st.st_ino, st.st_dev) != (inode, self.device)  # another file: not an edit
        if not moved or (st.st_size, st.st_mtime_ns) != (size, mtime):
            return False
        try:
            return _sample(path, size) == self.sample
        except OSError:
            return False


def trusted_sha256(path: Path, record: Record | None = None) -> str | None:
    """The sha256 of ``path`` if its record (``record``, else read) or this process vouches for
    it as it is now; None if it must be hashed. A faithful copy's record is rewritten for it."""
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
    record = record if record is not None else read(path)
    if record is None:
        return None
    if record.identity == now:
        return record.sha256
    if record.is_copy_of_it(path):
        log.info("%s is a copy of the file its record was made for: trusted", path)
        remember(path, record.sha256)
        return record.sha256
    return None


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
        device, sample = data.get("device"), data.get("sample")
        return Record(
            sha256=str(data["sha256"]),
            identity=tuple(int(x) for x in ident) if isinstance(ident, list) else None,  # type: ignore[arg-type]
            device=int(device) if isinstance(device, int) else None,
            sample=str(sample) if isinstance(sample, str) else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remember(path: Path, sha256: str) -> None:
    """Record that ``path``, as it is now, has this sha256; this process remembers it even where
    the record cannot be written (a read-only cache: said at INFO level, it changes nothing for
    the load). Any other failure only costs a hash in the next process."""
    st = os.stat(path)
    ident: Identity = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    with _hashed_lock:
        _hashed[os.path.abspath(path)] = (ident, sha256)
        _bad.pop(os.path.abspath(path), None)
    record = record_path(path)
    try:
        data = {
            "sha256": sha256,
            "identity": list(ident),
            "device": st.st_dev,
            "sample": _sample(path, st.st_size),
        }
        meta_dir(path.parent, create=True)  # never through a symlink planted in the cache
        with atomic_file(record, durable=False) as tmp:
            os.write(tmp.fd, json.dumps(data).encode())
    except OSError as exc:
        level = logging.INFO if exc.errno in _READ_ONLY else logging.WARNING
        log.log(
            level, "Could not write %s (%s): it is hashed again by the next process", record, exc
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


def _sample(path: Path, size: int) -> str:
    """sha256 of ``_SAMPLES`` blocks spread evenly over the file (the first and last included),
    and of its size: a few reads that tell apart two files of the same size and mtime."""
    digest = hashlib.sha256(str(size).encode())
    last = max(0, size - _SAMPLE)
    with open(path, "rb", buffering=0) as f:
        for i in range(_SAMPLES):
            f.seek(last * i // (_SAMPLES - 1))
            digest.update(f.read(_SAMPLE))
    return digest.hexdigest()
