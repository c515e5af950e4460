"""Derived folders: large data derived from a source (an engine's graph and its weights, up to
gigabytes), kept by key as a folder of files published whole.

A derived file (:mod:`._derive`) is read whole and hashed on every read: right for a few kB, not
for 3.3 GB. A derived folder is ``.wsl-images/derived/SOURCE~KEY/``: the maker's files (flat,
names not starting with ".") and a manifest, ``.manifest.json``, holding the full sha256 of the
source it was made from and each file's size and sha256. Like the sources themselves, each file
is hashed in full once and then trusted while its identity holds (size, mtime, ctime, inode: a
verification record, ``.NAME.verified``, beside it; :mod:`._records`), so later loads cost a
``stat`` per file, not a hash of gigabytes; ``verify_cache`` hashes every file in full.

The maker writes into a temp folder of its own beside the target; the files are hashed,
fsynced (a record vouches for them later without a hash, so they must survive a power cut),
described in the manifest, and the folder is published by one rename: readers see the whole
folder or none. A per-key lock makes concurrent processes make it once. A folder that fails
(a changed byte, a missing or extra file, made from another source) is never used: it is
removed (renamed away first, then deleted) and made again; where it cannot be removed (a
read-only cache) it is refused. The cache does not know what the files mean.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .._util import replace, temp_name
from ..errors import WslImagesError
from . import _records
from ._lock import file_lock
from ._paths import (
    DERIVED,
    Failures,
    content_sha256,
    derived_path,
    meta_dir,
    remove_tree,
    why_not_removed,
)

__all__ = [
    "Check",
    "check_folder",
    "folder_size",
    "keep_derived_files",
    "load_derived_files",
    "scratch_folder",
]

log = logging.getLogger(__name__)

MANIFEST = ".manifest.json"
_FORMAT = "wsl-images derived files 1"
Mode = Literal["trust", "load", "full"]


@dataclass(frozen=True)
class Check:
    """What a derived folder was found to be: ``good`` (every file matches its manifest and the
    source), else ``reason`` says why not; ``unchecked``: files no record vouches for (only in
    mode "trust", which hashes nothing)."""

    good: bool
    reason: str = ""
    unchecked: int = 0


def load_derived_files(source: Path, key: str) -> Path | None:
    """The folder of files derived from ``source`` under ``key``, if it is kept, was made from
    this very source (by sha256) and every file matches its manifest (trusted by its record,
    else hashed in full once); else None, and a bad one is removed (or, where it cannot be,
    left and refused)."""
    sha = source_sha256(source)
    folder = derived_path(source, key)
    if sha is None or not (folder.is_dir() and not folder.is_symlink()):
        return None
    check = check_folder(folder, sha, mode="load")
    if check.good:
        return folder
    failed: Failures = []
    remove_tree(folder, failed)
    left = f"; it could not be removed ({failed[0][1]})" if failed else ""
    log.warning(
        "%s failed its check (%s): not used%s; it is made again from the verified %s",
        folder,
        check.reason,
        left,
        source.name,
    )
    return None


def keep_derived_files(source: Path, key: str, make: Callable[[Path], None]) -> Path:
    """The folder of files derived from ``source`` under ``key``, made now by ``make(folder)``
    (which writes its files into the empty ``folder``) unless a good one is kept already;
    published whole. :class:`WslImagesError` (an ``OSError`` inside) if it cannot be kept: a
    read-only cache, a full disk; whatever ``make`` raises propagates, and nothing is left."""
    sha = source_sha256(source)
    if sha is None:
        msg = f"{source} is not a verified file of the cache: nothing can be derived from it."
        raise WslImagesError(msg)
    target = derived_path(source, key)
    try:
        source.parent.mkdir(parents=True, exist_ok=True)  # a stand-in source's cache folder
        meta_dir(source.parent, create=True)
    except OSError as exc:
        raise _cannot_keep(target, exc) from exc
    with file_lock(target, path=meta_dir(source.parent) / f"{target.name}.lock"):
        found = load_derived_files(source, key)  # made by another process while we waited?
        if found is not None:
            return found
        try:
            staging = target.with_name(temp_name(target.name))
            staging.mkdir()
        except OSError as exc:
            raise _cannot_keep(target, exc) from exc
        try:
            make(staging)
            files = _describe(staging)
            _write_manifest(staging, sha, files)
            if not _publish(staging, target, sha):
                return target  # another process published a good one first (no lock here)
        except OSError as exc:
            raise _cannot_keep(target, exc) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for name, (_, file_sha) in files.items():  # hashed above: later loads only stat them
            _records.remember(target / name, file_sha, at=_record_at(target, name))
    return target


@contextlib.contextmanager
def scratch_folder(folder: Path) -> Iterator[Path]:
    """An empty folder for a maker's passing files, among the derived files of the cache
    ``folder`` (a temp name: left by a crash, the next cleanup removes it), removed on exit.
    :class:`WslImagesError` if the cache cannot hold it (read-only, full)."""
    target = meta_dir(folder) / DERIVED / "scratch"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        meta_dir(folder, create=True)
        scratch = target.with_name(temp_name(target.name))
        scratch.mkdir()
    except OSError as exc:
        raise _cannot_keep(target, exc) from exc
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check_folder(folder: Path, source_sha: str | None, *, mode: Mode) -> Check:
    """Check a derived folder against its manifest and ``source_sha`` (None: the source is
    missing or bad). ``mode``: "trust" hashes nothing (a file no record vouches for is counted
    in ``unchecked``); "load" hashes those files; "full" hashes every file (``verify_cache``).
    A file hashed good gets its record, so the next load trusts it."""
    manifest = _read_manifest(folder)
    if manifest is None:
        return Check(False, "its manifest is missing or unreadable")
    made_from, files = manifest
    if made_from != source_sha:
        return Check(False, "its source is missing, bad or another file")
    try:
        present = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    except OSError as exc:
        return Check(False, f"it cannot be listed ({exc.strerror or exc})")
    if present != set(files):
        extra, missing = sorted(present - set(files)), sorted(set(files) - present)
        return Check(False, f"files missing {missing} or not in its manifest {extra}")
    unchecked = 0
    for name, (size, sha) in sorted(files.items()):
        path, record_at = folder / name, _record_at(folder, name)
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size != size:
                return Check(False, f"{name} is not the file of {size:,} bytes it was")
            if mode != "full":
                if _records.trusted_sha256(path, at=record_at) == sha:
                    continue
                if mode == "trust":
                    unchecked += 1
                    continue
                log.info("Verifying %s (sha256 of the whole file, once)", path)
            actual = _records.sha256_of(path)
        except OSError as exc:
            return Check(False, f"{name} cannot be read ({exc.strerror or exc})")
        if actual != sha:
            return Check(False, f"the sha256 of {name} does not match its manifest")
        _records.remember(path, actual, at=record_at)
    return Check(True, unchecked=unchecked)


def folder_size(folder: Path) -> int:
    """Bytes of the files in a derived folder (its manifest and records included)."""
    with contextlib.suppress(OSError):
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return 0


def source_sha256(source: Path) -> str | None:
    """The sha256 of a verified cached source (from its record), or the one a stand-in source
    names (:func:`._paths.content_source`); None otherwise."""
    return _records.trusted_sha256(source) or content_sha256(source)


def _describe(staging: Path) -> dict[str, tuple[int, str]]:
    """Each file the maker wrote: (size, sha256), fsynced. Flat files only, no hidden names."""
    files: dict[str, tuple[int, str]] = {}
    for path in sorted(staging.iterdir()):
        if path.name.startswith(".") or path.is_symlink() or not path.is_file():
            msg = f"A derived folder holds plain files only, not {path.name!r}."
            raise WslImagesError(msg)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        files[path.name] = (path.stat().st_size, _records.sha256_of(path))
    if not files:
        msg = "Nothing was written into the derived folder."
        raise WslImagesError(msg)
    return files


def _write_manifest(staging: Path, source_sha: str, files: dict[str, tuple[int, str]]) -> None:
    manifest = {
        "format": _FORMAT,
        "source_sha256": source_sha,
        "files": {name: {"size": size, "sha256": sha} for name, (size, sha) in files.items()},
    }
    with open(staging / MANIFEST, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _read_manifest(folder: Path) -> tuple[str, dict[str, tuple[int, str]]] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if data["format"] != _FORMAT:
            return None
        files = {
            str(name): (int(entry["size"]), str(entry["sha256"]))
            for name, entry in data["files"].items()
        }
        return str(data["source_sha256"]), files
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _publish(staging: Path, target: Path, source_sha: str) -> bool:
    """Move ``staging`` to ``target`` by one rename; False if a good folder got there first
    (another process, where locks do not work). A bad one in the way is removed first."""
    if os.path.lexists(target) and check_folder(target, source_sha, mode="load").good:
        return False
    failed: Failures = []
    remove_tree(target, failed)
    if failed:
        path, why = failed[0]
        msg = f"the bad derived folder {str(path)!r} cannot be replaced: {why}"
        raise PermissionError(msg)
    try:
        replace(staging, target)
    except OSError:
        # Another process published while locks do not work here: keep the good one.
        if check_folder(target, source_sha, mode="load").good:
            return False
        raise
    _fsync_folder(target.parent)
    return True


def _record_at(folder: Path, name: str) -> Path:
    return folder / f".{name}.verified"


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _cannot_keep(target: Path, exc: OSError) -> WslImagesError:
    msg = (
        f"Cannot keep {target.name} in the cache folder {str(target.parent.parent.parent)!r} "
        f"({why_not_removed(exc) if exc.errno else exc}). Point WSL_IMAGES_CACHE at a writable "
        "folder with room for it (or make it once where the cache is writable: later runs only "
        "read it)."
    )
    return WslImagesError(msg)
