"""Cache management: what is cached (``scan_cache``), is it intact (``verify_cache``), remove it
(``clear_cache``). The CLI's ``cache list | verify | clear`` print what these return.

The cache folder is shared with torch.hub and timm: only files wsl-images knows are listed,
verified or removed: the registered models' files, files it recorded (downloads by URL), and
everything in its own bookkeeping folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .._util import cleanup_stale, hash_prefix_of
from ..errors import UnknownModelError
from ..zoo import get_weights, list_models
from . import _records
from ._derive import check_derived
from ._mismatch import is_released_file
from ._paths import (
    DERIVED,
    Failures,
    derived_path,
    get_cache_dir,
    meta_dir,
    obsolete_copies,
    remove_file,
    source_name_of,
)
from ._store import clear_error, remove_source

__all__ = ["BadFile", "CacheEntry", "DerivedFile", "clear_cache", "scan_cache", "verify_cache"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DerivedFile:
    """A file made from a cached source: its layout, or an obsolete copy of an older version."""

    path: Path
    size: int
    verified: bool  # intact and made from the source as it is now (obsolete copies: never)
    obsolete: bool = False  # a full copy kept by wsl-images 0.1 or 0.2, no longer used


@dataclass(frozen=True)
class CacheEntry:
    """One cached file: a registered model's (``name`` = model name) or a URL's (file name)."""

    name: str
    path: Path
    size: int  # bytes of the file itself (0 if it is gone but copies of it remain)
    verified: bool  # a record vouches for it as it is now; else it is hashed on its next use
    hash_in_name: bool  # its name carries a sha256 prefix (else only our record checks it)
    derived: tuple[DerivedFile, ...]

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    @property
    def size_on_disk(self) -> int:
        """The file and everything derived from it."""
        return self.size + sum(d.size for d in self.derived)


@dataclass(frozen=True)
class BadFile:
    """A file that failed ``verify_cache``, and what was done about it."""

    path: Path
    reason: str


def scan_cache(cache_dir: str | os.PathLike[str] | None = None) -> list[CacheEntry]:
    """Every file wsl-images knows in the cache folder, sorted by name, with derived files."""
    folder = get_cache_dir(cache_dir)
    return [_entry(path) for path in _known_sources(folder)]


def verify_cache(
    names: Iterable[str] | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> list[BadFile]:
    """Hash every selected file in full (sources and derived files); return the bad ones.

    A good source's record is rewritten for the file as it lies now, so a copied cache verified
    while writable loads without a hash afterwards, read-only too. A bad source loses its record,
    so its next use hashes it again and downloads it anew; a bad or orphaned derived file is
    removed (the next load makes it again from the source, offline). Obsolete copies of older
    versions are never loaded, so not checked (``clear_cache`` removes them).
    """
    folder = get_cache_dir(cache_dir)
    bad: list[BadFile] = []
    for source in _select(folder, names):
        source_sha = _verify_source(source, bad) if source.is_file() else None
        derived = derived_path(source)
        if derived.is_file():
            _verify_derived(derived, source_sha, bad)
    return bad


def clear_cache(
    names: Iterable[str] | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Remove the selected files (default: all wsl-images knows) with their records, derived
    files and obsolete copies, and temp files of killed writers; return the paths removed.

    A file that cannot be removed (on Windows: one a loaded model maps) does not stop the rest:
    everything else is removed, then :class:`ClearCacheError` names what was left and why (its
    ``removed`` and ``failed`` say which).
    """
    folder = get_cache_dir(cache_dir)
    removed: list[Path] = []
    failed: Failures = []
    if names is None:
        for where in (folder, meta_dir(folder), meta_dir(folder) / DERIVED):
            removed += cleanup_stale(where)
    for source in _select(folder, names):
        removed += remove_source(source, failed=failed)
    if failed:
        raise clear_error(removed, failed)
    return removed


def _known_sources(folder: Path) -> list[Path]:
    """Registered files present, files with a record, and sources of any derived file."""
    registered = {get_weights(m).filename for m in list_models()}
    names: set[str] = set()
    if folder.is_dir():
        for entry in os.scandir(folder):
            name = entry.name
            if name.startswith(".") or not entry.is_file():
                continue
            base = name.removesuffix(".safetensors")
            if name in registered or _records.read(folder / name) is not None:
                names.add(name)
            elif base != name and (base in registered or (folder / base).exists()):
                names.add(base)  # 0.1's obsolete copy lists under its source
    derived = meta_dir(folder) / DERIVED
    if derived.is_dir():
        for entry in os.scandir(derived):
            source = source_name_of(entry.name)
            if source:
                names.add(source)
    return [folder / name for name in sorted(names)]


def _select(folder: Path, names: Iterable[str] | None) -> list[Path]:
    """The cached files meant by model names, aliases or cache file names (default: all)."""
    if names is None:
        return _known_sources(folder)
    chosen = []
    for name in names:
        if "/" not in name and "\\" not in name and (folder / name).is_file():
            chosen.append(folder / name)
            continue
        try:
            chosen.append(folder / get_weights(name).filename)
        except UnknownModelError as exc:
            msg = f"{exc} (Or give the name of a file in the cache {str(folder)!r}.)"
            raise UnknownModelError(msg) from None
    return chosen


def _entry(source: Path) -> CacheEntry:
    registered = {get_weights(m).filename: m for m in list_models()}
    exists = source.is_file()
    sha = _records.trusted_sha256(source) if exists else None
    verified = sha is not None
    derived = []
    layout = derived_path(source)
    made = check_derived(layout)  # a few kB: hashed, not trusted from a record
    if made is not None:
        good = made.source_sha256 == sha
        derived.append(DerivedFile(layout, layout.stat().st_size, good and made.intact))
    derived += [
        DerivedFile(old, old.stat().st_size, False, obsolete=True)
        for old in obsolete_copies(source)
        if old.is_file()
    ]
    return CacheEntry(
        name=registered.get(source.name, source.name),
        path=source,
        size=source.stat().st_size if exists else 0,
        verified=verified,
        hash_in_name=hash_prefix_of(source.name) is not None,
        derived=tuple(derived),
    )


def _verify_source(source: Path, bad: list[BadFile]) -> str | None:
    """Re-hash a source; its sha256 if good, else None (recorded in ``bad``)."""
    sha = _records.sha256_of(source)
    record = _records.read(source)
    expected = hash_prefix_of(source.name) or (record.sha256 if record is not None else None)
    # A URL's file downloaded with check_hash=False is good while it matches its record, even if
    # its name only looks hashed (``ckpt-epoch-10.pth``); a released model's file never is.
    unchecked = record is not None and sha == record.sha256 and not is_released_file(source.name)
    if expected is None or sha.startswith(expected) or unchecked:
        _records.remember(source, sha)  # for the file as it lies now: a copy is trusted hereafter
        return sha
    failed: Failures = []
    _records.forget(source, failed, bad=True)
    if failed:  # e.g. a read-only cache: the record would still vouch for it
        reason = (
            f"sha256 {sha} does not start with {expected}; its record could not be dropped "
            f"({failed[0][1]}): do not use this cache until the file is replaced"
        )
    else:
        reason = (
            f"sha256 {sha} does not start with {expected}; its record was dropped, so the next "
            f"load downloads it again (or remove it: wsl-images cache clear {source.name})"
        )
    bad.append(BadFile(source, reason))
    return None


def _verify_derived(path: Path, source_sha: str | None, bad: list[BadFile]) -> None:
    made = check_derived(path)
    if made is not None and made.intact and made.source_sha256 == source_sha:
        return
    if made is None or not made.intact:
        reason = "its sha256 does not match the one written with it"
    else:
        reason = "its source is missing, bad or another file"
    failed: Failures = []
    remove_file(path, failed)
    if failed:  # never used anyway: a load checks its sha256 and source first
        bad.append(BadFile(path, f"{reason}; could not be removed ({failed[0][1]}); never used"))
        return
    bad.append(BadFile(path, f"{reason}; removed: the next load makes it again from the source"))
