"""Derived copies: a memory-mappable torch zip file made once from a verified legacy source.

The released 2019 files are in torch's legacy (non-zip) format, which ``torch.load(mmap=True)``
refuses; read whole, the 3.3 GB model costs 20 s and a copy in memory on every load. So after a
verified download the cache derives a zip copy of its state dict (a "processor" in pooch's
terms), kept in the bookkeeping folder, and every later load maps that copy instead.

The copy is tied to its source: its record holds the source's full sha256, and its own sha256,
computed while it is written (no second pass). It is checked like a source (a record that still
vouches for it, else a full re-hash) and, if it fails, rebuilt from the verified source: no
network needed. Nothing else in the package writes it; loading only reads what this returns.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..atomic import atomic_file
from . import _records
from ._hasher import PrefixHasher
from ._paths import derived_path, meta_dir, obsolete_copy

__all__ = ["check_derived", "derive"]

log = logging.getLogger(__name__)


def check_derived(source: Path, source_sha256: str, *, repair: bool) -> Path | None:
    """The derived copy of ``source`` if it exists and verifies, else None.

    ``repair`` (with the source's lock held): a bad copy is removed. Without the lock, another
    process may be replacing copy and record at this moment, so doubt only means None.
    """
    target = derived_path(source)
    record = _records.read(target)
    if record is None or not target.is_file():
        return None
    if record.source_sha256 != source_sha256:  # made from another file of this name
        if repair:
            _remove(target)
        return None
    if record.vouches_for(target):
        return target
    if not repair:
        return None  # its identity changed: hash it under the lock
    log.info("Verifying %s (sha256 of the whole file, once)", target)
    if _records.sha256_of(target) == record.sha256:
        _records.remember(target, record.sha256, source_sha256=source_sha256)
        return target
    log.warning(
        "The memory-mappable copy %s does not match the sha256 recorded when it was written: "
        "it was removed and is rebuilt from its verified source %s",
        target,
        source.name,
    )
    _remove(target)
    return None


def derive(source: Path, source_sha256: str) -> Path:
    """Write the derived copy of the verified legacy file ``source``; return its path.

    Raises OSError if it cannot be written (disk full, read-only cache): the caller may then
    load the source itself, which is verified too, only not memory-mappable.
    """
    import torch

    from ..loading import read_state_dict  # torch: imported only when a copy is made

    target = derived_path(source)
    meta_dir(source.parent, create=True)
    state = read_state_dict(source)  # weights_only=True: a bad source is refused here
    log.info("Writing the memory-mappable copy %s of %s (once)", target.name, source.name)
    # Not fsynced: after a crash a torn copy fails its record and is simply rebuilt.
    with atomic_file(target, durable=False) as tmp, _HashingWriter(tmp.fd) as writer:
        torch.save({k: v.contiguous() for k, v in state.items()}, writer)  # type: ignore[arg-type]
    del state
    _records.remember(target, writer.hexdigest(), source_sha256=source_sha256)
    obsolete = obsolete_copy(source)  # wsl-images 0.1's safetensors copy: same role, now unused
    if obsolete.exists():
        obsolete.unlink()
    return target


def _remove(target: Path) -> None:
    target.unlink(missing_ok=True)
    _records.forget(target)


class _HashingWriter:
    """A write-only file object for torch.save that hashes what it writes, in one pass.

    ``write`` only writes (torch reuses its buffers once the call returns); a hasher thread
    reads the written bytes back from the page cache and hashes them meanwhile, so sha256 runs
    beside torch's serialising and writing instead of after it. The digest is complete when the
    block ends.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0
        self.cond = threading.Condition()
        self.abort = threading.Event()
        self.hasher = PrefixHasher(
            fd, self.cond, lambda: self.written, self.abort, write_back=False
        )
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="wsl-images-hash")
        self.digest: Future[str] = self.pool.submit(self.hasher.run)

    def __enter__(self) -> _HashingWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        with self.cond:
            if exc_type is None:
                self.hasher.finish()
            else:
                self.abort.set()
                self.cond.notify_all()
        self.pool.shutdown()

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        rest = view
        while rest:
            rest = rest[os.write(self.fd, rest) :]
        with self.cond:
            self.written += len(view)
            self.cond.notify_all()
        return len(view)

    def flush(self) -> None:
        pass

    def hexdigest(self) -> str:
        """The sha256 of everything written (waits for the hasher)."""
        return self.digest.result()
