"""Derived files: data made once from a verified source (a "processor" in pooch's terms), kept
by key for whoever asks. The cache does not know what they mean, only what they were made from.

Each is one file in the bookkeeping folder that carries the full sha256 of the source it was
made from and its own sha256: published atomically, and checked in full on every read. One that
fails, or was made from another source, is never used: it is removed and made again by its
owner from the verified source, offline. ``scan_cache`` lists them under their source,
``verify_cache`` checks them, and ``clear_cache`` removes them with it. The kind that loading
keeps is a legacy-format file's layout (key ``"layout"``: where each tensor lies in the file, so
a later load maps the tensors without parsing the file's pickle again; a few kB). Large data
(an engine's graph: up to gigabytes) is kept as a derived folder instead (:mod:`._bundles`).

Full weight copies that development builds kept here are never read; they are listed as
obsolete by ``scan_cache`` and removed on the next load of their source or by ``clear_cache``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .._util import atomic_file
from . import _records
from ._paths import (
    Failures,
    content_sha256,
    derived_path,
    meta_dir,
    obsolete_copies,
    remove_file,
)

__all__ = ["Derived", "check_derived", "drop_obsolete", "keep_derived", "load_derived"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Derived:
    """What a derived file says of itself."""

    source_sha256: str
    payload: bytes
    intact: bool  # its bytes match the sha256 written with them


def check_derived(path: Path) -> Derived | None:
    """Read and hash-check a derived file; None if it is missing or unreadable."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    head, _, payload = raw.partition(b"\n")
    try:
        header = json.loads(head)
        source_sha, sha = str(header["source_sha256"]), str(header["sha256"])
    except (ValueError, KeyError, TypeError):
        return Derived("", payload, intact=False)
    return Derived(source_sha, payload, hashlib.sha256(payload).hexdigest() == sha)


def load_derived(source: Path, key: str) -> bytes | None:
    """The data derived from the verified cached ``source`` under ``key``, if it is kept, intact
    and made from this very source (by sha256); else None, and a bad one is removed."""
    sha = _source_sha256(source)
    if sha is None:
        return None
    target = derived_path(source, key)
    derived = check_derived(target)
    if derived is None:
        return None
    if derived.intact and derived.source_sha256 == sha:
        return derived.payload
    log.warning(
        "%s failed its check (%s): not used; it is made again from the verified %s",
        target,
        "another source" if derived.intact else "its sha256 does not match its bytes",
        source.name,
    )
    with contextlib.suppress(OSError):  # a read-only cache: the next write replaces it
        target.unlink(missing_ok=True)
    return None


def keep_derived(source: Path, key: str, data: bytes) -> None:
    """Keep ``data`` derived from the verified cached ``source`` under ``key``. A failure (a
    read-only shared cache) only costs making it again later."""
    sha = _source_sha256(source)
    if sha is None:
        return
    header = {"source_sha256": sha, "sha256": hashlib.sha256(data).hexdigest()}
    target = derived_path(source, key)
    try:
        meta_dir(source.parent, create=True)
        # Not fsynced: a file torn by a crash fails its hash and is simply made again.
        with atomic_file(target, durable=False) as tmp:
            view = memoryview(json.dumps(header).encode() + b"\n" + data)
            while view:
                view = view[os.write(tmp.fd, view) :]
    except OSError as exc:
        log.info("Could not keep %s derived from %s (%s)", key, source.name, exc)


def drop_obsolete(source: Path, *, failed: Failures | None = None) -> list[Path]:
    """Remove the full copies development builds derived from ``source``; return what was
    removed.

    One that cannot be removed is added to ``failed``, or logged if none is given (at INFO:
    on a read-only shared cache it happens on every load, and changes nothing for the load).
    """
    removed, failures = [], [] if failed is None else failed
    for path in obsolete_copies(source):
        if remove_file(path, failures):
            removed.append(path)
    if failed is None:
        for path, why in failures:
            log.info("Could not remove the obsolete copy %s: %s", path, why)
    return removed


def _source_sha256(source: Path) -> str | None:
    return _records.trusted_sha256(source) or content_sha256(source)
