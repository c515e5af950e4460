"""Cache management: what is cached (``scan_cache``), is it intact (``verify_cache``), remove it
(``clear_cache``). The CLI's ``cache list | verify | clear`` print what these return.

The cache folder is shared with torch.hub and timm: only files wsl-images knows are listed,
verified or removed: the ``known`` files the caller names (the released models' files, by file
name, with the name to show for each), files it recorded (downloads by URL), and everything in
its own bookkeeping folder. A known file's name is taken to carry its true sha256 prefix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .._util import cleanup_stale, hash_prefix_of
from ..errors import InvalidInputError
from . import _records
from ._bundles import check_folder, folder_size
from ._bundles import source_sha256 as bundle_source_sha256
from ._derive import check_derived
from ._paths import (
    DERIVED,
    Failures,
    content_sha256,
    derived_key,
    derived_paths,
    get_cache_dir,
    meta_dir,
    obsolete_copies,
    remove_derived,
    source_name_of,
)
from ._store import clear_error, remove_source

__all__ = ["BadFile", "CacheEntry", "DerivedFile", "clear_cache", "scan_cache", "verify_cache"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DerivedFile:
    """A file made from a cached source (its layout), a folder of files (an engine's graph and
    its weights), or an obsolete copy."""

    path: Path
    size: int  # bytes (a folder: of all its files)
    verified: bool  # intact and made from the source as it is now (obsolete copies: never)
    obsolete: bool = False  # a full weight copy made by development builds, never read
    key: str = "layout"  # what it is, as its maker asked for it (``"layout"``: tensor layout)
    folder: bool = False  # a derived folder: ``verified`` from its files' records, not hashed


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
    def content_only(self) -> bool:
        """A stand-in for a file outside the cache, known by its sha256 (``sha256-<hex>``): a
        user's checkpoint whose derived data the cache keeps."""
        return content_sha256(self.path) is not None

    @property
    def size_on_disk(self) -> int:
        """The file and everything derived from it."""
        return self.size + sum(d.size for d in self.derived)


@dataclass(frozen=True)
class BadFile:
    """A file that failed ``verify_cache``, and what was done about it."""

    path: Path
    reason: str


Known = Mapping[str, str]  # cache file name -> the name to show for it (e.g. a model's)


def scan_cache(
    cache_dir: str | os.PathLike[str] | None = None, *, known: Known | None = None
) -> list[CacheEntry]:
    """Every file wsl-images knows in the cache folder, sorted by name, with derived files.

    ``known``: file names the caller knows, with the name each entry shows (else its file name).
    """
    folder = get_cache_dir(cache_dir)
    names = known or {}
    return [_entry(path, names) for path in _known_sources(folder, names)]


def verify_cache(
    files: Iterable[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    known: Known | None = None,
) -> list[BadFile]:
    """Hash every selected file in full (sources and derived files); return the bad ones.

    A good source's record is rewritten for the file as it lies now, so a copied cache verified
    while writable loads without a hash afterwards, read-only too. A bad source loses its record,
    so its next use hashes it again and downloads it anew; a bad or orphaned derived file is
    removed (the next load makes it again from the source, offline). Obsolete copies are never
    loaded, so not checked (``clear_cache`` removes them). ``files``: cache file names (default:
    all it knows, ``known`` included).
    """
    folder = get_cache_dir(cache_dir)
    names = known or {}
    bad: list[BadFile] = []
    for source in _select(folder, files, names):
        source_sha = (
            _verify_source(source, bad, released=source.name in names)
            if source.is_file()
            else content_sha256(source)
        )
        for derived in derived_paths(source):
            _verify_derived(derived, source_sha, bad)
    return bad


def clear_cache(
    files: Iterable[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    known: Known | None = None,
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
    if files is None:
        for where in (folder, meta_dir(folder), meta_dir(folder) / DERIVED):
            removed += cleanup_stale(where)
    for source in _select(folder, files, known or {}):
        removed += remove_source(source, failed=failed)
    if failed:
        raise clear_error(removed, failed)
    return removed


def _known_sources(folder: Path, registered: Known) -> list[Path]:
    """Known files present, files with a record, and sources of any derived file."""
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
                names.add(base)  # an obsolete copy lists under its source
    derived = meta_dir(folder) / DERIVED
    if derived.is_dir():
        for entry in os.scandir(derived):
            source = source_name_of(entry.name)
            if source:
                names.add(source)
    return [folder / name for name in sorted(names)]


def _select(folder: Path, files: Iterable[str] | None, known: Known) -> list[Path]:
    """The cached files of these file names (default: all the cache knows)."""
    if files is None:
        return _known_sources(folder, known)
    chosen = []
    for name in files:
        if not name or name != Path(name).name or name.startswith("."):
            msg = f"{name!r} is not the name of a file in the cache {str(folder)!r}."
            raise InvalidInputError(msg)
        chosen.append(folder / name)
    return chosen


def _entry(source: Path, known: Known) -> CacheEntry:
    exists = source.is_file()
    sha = bundle_source_sha256(source)
    verified = exists and sha is not None
    derived = []
    for path in derived_paths(source):
        if path.is_dir():  # gigabytes: trusted from its files' records, hashed by verify
            check = check_folder(path, sha, mode="trust")
            trusted = check.good and check.unchecked == 0
            key = derived_key(source, path)
            derived.append(DerivedFile(path, folder_size(path), trusted, key=key, folder=True))
            continue
        made = check_derived(path)  # hashed, not trusted from a record
        if made is not None:
            good = made.source_sha256 == sha
            size, intact = path.stat().st_size, good and made.intact
            derived.append(DerivedFile(path, size, intact, key=derived_key(source, path)))
    derived += [
        DerivedFile(old, old.stat().st_size, False, obsolete=True)
        for old in obsolete_copies(source)
        if old.is_file()
    ]
    return CacheEntry(
        name=known.get(source.name, source.name),
        path=source,
        size=source.stat().st_size if exists else 0,
        verified=verified,
        hash_in_name=hash_prefix_of(source.name) is not None,
        derived=tuple(derived),
    )


def _verify_source(source: Path, bad: list[BadFile], *, released: bool) -> str | None:
    """Re-hash a source; its sha256 if good, else None (recorded in ``bad``)."""
    sha = _records.sha256_of(source)
    record = _records.read(source)
    expected = hash_prefix_of(source.name) or (record.sha256 if record is not None else None)
    # A URL's file downloaded with check_hash=False is good while it matches its record, even if
    # its name only looks hashed (``ckpt-epoch-10.pth``); a released model's file never is.
    unchecked = record is not None and sha == record.sha256 and not released
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
    if path.is_dir() and not path.is_symlink():
        check = check_folder(path, source_sha, mode="full")  # every file hashed in full
        if check.good:
            return
        reason = check.reason
    else:
        made = check_derived(path)
        if made is not None and made.intact and made.source_sha256 == source_sha:
            return
        if made is None or not made.intact:
            reason = "its sha256 does not match the one written with it"
        else:
            reason = "its source is missing, bad or another file"
    failed: Failures = []
    remove_derived(path, failed)
    if failed:  # never used anyway: a load checks its sha256 and source first
        bad.append(BadFile(path, f"{reason}; could not be removed ({failed[0][1]}); never used"))
        return
    bad.append(BadFile(path, f"{reason}; removed: the next load makes it again from the source"))
