"""The cache's files: verified sources, fetched at most once, and the file loading receives.

Model-agnostic: a file is asked for by URL; the caller says what messages should call it
(``label``, e.g. a model name) and whether the sha256 prefix in its name is known to be right
(``released``: a published file, which a mismatch means is corrupt and which a mirror holds).

Safety model (as pooch): download to a temp file of this process in the cache folder, check the
sha256 prefix carried by the file name, fsync, publish with ``os.replace``
(:func:`wsl_images._util.atomic_file`). A per-file lock makes concurrent processes download
once; without it (a filesystem where locks do not work) each process fetches its own copy and
the last rename wins, with identical, verified content.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from .._util import atomic_file, cleanup_stale, hash_prefix_of, is_temp_name
from ..errors import (
    ClearCacheError,
    DownloadError,
    HashMismatchError,
    InvalidInputError,
    MissingDependencyError,
    OfflineError,
    UnreachableError,
    WslImagesError,
)
from . import _records
from ._derive import drop_obsolete
from ._http import RetriesExhaustedError, TransferOptions
from ._lock import file_lock
from ._mismatch import cached_mismatch, download_mismatch, unchecked_mismatch
from ._paths import (
    Failures,
    derived_paths,
    filename_from_url,
    get_cache_dir,
    is_offline,
    remove_derived,
    remove_file,
)
from ._space import no_space_message

__all__ = [
    "clear_error",
    "download_url",
    "loadable",
    "mirror_url",
    "remove_source",
    "source_sha256",
]

log = logging.getLogger(__name__)

Folder = str | os.PathLike[str] | None


def mirror_url(url: str) -> str:
    """Where to fetch a published file from: ``$WSL_IMAGES_MIRROR/FILENAME`` when a mirror is
    set (air-gapped clusters, internal mirrors; the same hash check), else ``url``."""
    mirror = os.environ.get("WSL_IMAGES_MIRROR", "").strip()
    if not mirror:
        return url
    if not mirror.startswith(("http://", "https://")):
        msg = (
            f"Environment variable WSL_IMAGES_MIRROR={mirror!r} is not valid: it takes the "
            "base URL of a mirror (http:// or https://, e.g. https://mirror.example/models). "
            "Fix it or unset it."
        )
        raise InvalidInputError(msg)
    return mirror.rstrip("/") + "/" + filename_from_url(url)


def download_url(
    url: str,
    *,
    progress: bool = True,
    check_hash: bool = True,
    cache_dir: Folder = None,
    options: TransferOptions | None = None,
    label: str | None = None,
    released: bool = False,
) -> Path:
    """Download ``url`` into the cache unless a verified copy is there; return its path.

    ``options`` tunes timeouts, retries and parallel connections (default: from the environment);
    ``label`` is what error messages tell the user to pre-fetch (a model name or the URL);
    ``released``: the sha256 prefix in the file's name is known to be its hash (a published
    file: a mismatch then means corruption, and turning the check off is not suggested).
    """
    return _obtain(url, progress, check_hash, cache_dir, options, label or url, released)[0]


def loadable(
    url: str,
    *,
    progress: bool = True,
    check_hash: bool = True,
    cache_dir: Folder = None,
    label: str | None = None,
    released: bool = False,
) -> Path:
    """The verified cached file to load for ``url``, fetched if needed (as :func:`download_url`).

    Loading maps it as it lies (either format), so no copy is made; full copies that development
    builds derived from it are removed here.
    """
    source, _ = _obtain(url, progress, check_hash, cache_dir, None, label or url, released)
    drop_obsolete(source)
    return source


def source_sha256(
    url: str,
    *,
    progress: bool = True,
    check_hash: bool = True,
    cache_dir: Folder = None,
    label: str | None = None,
    released: bool = False,
) -> str:
    """The full sha256 of the verified cached file of ``url`` (fetched if needed): the
    checkpoint's identity, from its record (a stat)."""
    return _obtain(url, progress, check_hash, cache_dir, None, label or url, released)[1]


def remove_source(source: Path, *, failed: Failures | None = None) -> list[Path]:
    """Remove a cached file with its record and everything derived from it; returns what was
    removed. What cannot be removed (on Windows: a file a loaded model maps) is left and added
    to ``failed`` with the reason; without ``failed``, :class:`ClearCacheError` reports it once
    the rest is removed. A source that stays keeps its record and derived files: it is still the
    verified file it was."""
    failures: Failures = [] if failed is None else failed
    before = len(failures)
    removed = [source] if remove_file(source, failures) else []
    if len(failures) == before:  # the source is gone (or was not there)
        removed += [d for d in derived_paths(source) if remove_derived(d, failures)]
        _records.forget(source, failures)  # bookkeeping: not listed
    removed += drop_obsolete(source, failed=failures)
    if failed is None and failures:
        raise clear_error(removed, failures)
    return removed


def clear_error(removed: list[Path], failed: Failures) -> ClearCacheError:
    """The error of a removal that left some files in place."""
    lines = "".join(f"\n  {path}: {why}" for path, why in failed)
    msg = (
        f"Removed {len(removed)} file(s), but {len(failed)} could not be removed and were left "
        f"as they were:{lines}\nFree them (or make the folder writable), then remove them again "
        "(`wsl-images cache clear NAME`)."
    )
    return ClearCacheError(msg, removed, failed)


def _obtain(
    url: str,
    progress: bool,
    check_hash: bool,
    cache_dir: Folder,
    options: TransferOptions | None,
    label: str,
    released: bool,
) -> tuple[Path, str]:
    """(path, full sha256) of the verified cached file for ``url``, downloading it if needed."""
    filename = filename_from_url(url)
    folder = get_cache_dir(cache_dir)
    target = folder / filename
    expected = hash_prefix_of(filename) if check_hash else None
    offline = is_offline()
    # Before the lock a bad file is only reported (offline) or left for the locked check: a
    # process holding the lock may be publishing a good one at this very moment.
    if (
        sha := check_source(
            target, expected, on_bad="raise" if offline else "skip", url=url, released=released
        )
    ) is not None:
        return target, sha
    if offline:
        msg = (
            f"{filename} is not in the cache {str(folder)!r} and WSL_IMAGES_OFFLINE=1 forbids "
            f"downloading it from {url!r}. Pre-fetch it where there is a network with "
            f"`wsl-images download {label}` (then copy {filename} into {folder}), or "
            "unset WSL_IMAGES_OFFLINE (WSL_IMAGES_MIRROR can point at an internal mirror)."
        )
        raise OfflineError(msg)
    _require_download_packages(filename, folder)
    opts = options or TransferOptions.from_env()  # a bad knob fails before anything is touched
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"Cannot create the cache folder {str(folder)!r} ({exc}): set WSL_IMAGES_CACHE."
        raise DownloadError(msg) from exc
    with file_lock(target):
        # Another process may have published the file while we waited for the lock.
        checked = check_source(target, expected, on_bad="remove", url=url, released=released)
        if checked is not None:
            return target, checked
        cleanup_stale(folder)
        try:
            sha = _fetch(url, target, expected, progress, opts, released=released)
        except UnreachableError as exc:
            host = urlsplit(url).hostname or url
            msg = (
                f"{exc} {filename} could not be downloaded from {url!r}. Without a network: "
                f"pre-fetch it where there is one (`wsl-images download {label}`) and copy it "
                f"into {str(folder)!r}; point WSL_IMAGES_MIRROR at a mirror you can reach "
                f"instead of {host}; or set WSL_IMAGES_OFFLINE=1 to use only cached files."
            )
            raise UnreachableError(msg) from exc
        except RetriesExhaustedError as exc:
            msg = (
                f"{exc} Or pre-fetch it on a machine with network access: `wsl-images download "
                f"{label}`, then copy {filename} into {str(folder)!r}."
            )
            raise DownloadError(msg) from exc
    return target, sha


def check_source(
    target: Path,
    expected: str | None,
    *,
    on_bad: Literal["remove", "skip", "raise"],
    url: str,
    released: bool,
) -> str | None:
    """The full sha256 of ``target`` if it is there and good, hashing it only if no record
    vouches for it; None if it is missing or bad. A bad file is removed (``"remove"``: it will be
    downloaded again; call with the file's lock held), left alone (``"skip"``) or reported with
    :class:`HashMismatchError` (``"raise"``: offline).

    Good means: its sha256 starts with ``expected`` (the prefix in its name); without one, it
    matches the sha256 recorded when it was downloaded. A file of ``url`` downloaded unchecked,
    whose name only looks hashed, is not bad: while it matches its record it is refused as it
    is (:class:`HashMismatchError`, whatever ``on_bad``): fetched again, it would be refused
    the same. A released model's file of the wrong sha256 is bad, whatever its record.
    """
    if not target.is_file():
        return None
    record = _records.read(target)
    reference = expected or (record.sha256 if record is not None else None)
    known = _records.trusted_sha256(target, record)
    if known is not None:
        sha = known
    else:
        why = "" if record is None else ": not the file its record was made for (a copy?)"
        log.info("Verifying %s (sha256 of the whole file, once)%s", target, why)
        sha = _records.sha256_of(target)
    intact = record is not None and sha == record.sha256
    if known is None and (reference is None or sha.startswith(reference) or intact):
        _records.remember(target, sha)
    if reference is None or sha.startswith(reference):
        if hash_prefix_of(target.name) is None:
            log.warning("%s has no sha256 prefix in its name: used unverified", target.name)
        return sha
    if expected and intact and not released:
        msg = unchecked_mismatch(url, str(target), target.name, expected, sha)
        raise HashMismatchError(msg)
    if on_bad == "skip":
        return None
    if on_bad == "raise":
        msg = cached_mismatch(
            str(target), target.name, reference, sha, named=bool(expected), released=released
        )
        raise HashMismatchError(msg)
    log.warning(
        "Cached %s has sha256 %s, expected %s...: downloading it again", target, sha, reference
    )
    failed: Failures = []
    _records.forget(target, failed, bad=True)
    remove_source(target, failed=failed)
    for path, why in failed:  # the download replaces it, or says why it cannot
        log.warning("Could not remove %s: %s", path, why)
    return None


def _require_download_packages(filename: str, folder: Path) -> None:
    missing = [name for name in ("requests", "tqdm") if importlib.util.find_spec(name) is None]
    if missing:
        msg = (
            f"Downloading {filename} needs the package(s) {', '.join(missing)}, which are not "
            f"installed: pip install {' '.join(missing)} (or copy the file into "
            f"{str(folder)!r}; files already in the cache load without them)."
        )
        raise MissingDependencyError(msg)


def _fetch(
    url: str,
    target: Path,
    expected: str | None,
    progress: bool,
    opts: TransferOptions,
    *,
    released: bool,
) -> str:
    """Download ``url`` and publish it at ``target`` if it verifies; return its sha256."""
    from tqdm.auto import tqdm

    from ._transfer import fetch

    show = progress and sys.stderr.isatty()
    try:
        with atomic_file(target, heartbeat=True) as tmp:
            with tqdm(
                unit="B", unit_scale=True, unit_divisor=1024, desc=target.name, disable=not show
            ) as bar:
                actual = fetch(url, tmp.path, tmp.fd, opts, bar)
            if expected is not None and not actual.startswith(expected):
                msg = download_mismatch(url, target.name, expected, actual, released=released)
                raise HashMismatchError(msg)
    except OSError as exc:
        if isinstance(exc, WslImagesError):  # ours, with its message (e.g. FileInUseError)
            raise
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            needed = getattr(exc, "needed", None)
            msg = no_space_message(target.parent, target.name, exc, needed)
        elif exc.errno == errno.ESTALE or (
            isinstance(exc, FileNotFoundError) and is_temp_name(Path(exc.filename or "").name)
        ):
            msg = (
                f"The temp file of this download of {target.name} was removed while it was being "
                f"written ({exc}): another process judged it abandoned (a download touches it "
                "every 30 s and is judged abandoned after 10 min without: was this process "
                "suspended?) or the folder was cleaned. Nothing was published; try again."
            )
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            msg = (
                f"Cannot write to the cache folder {str(target.parent)!r} ({exc}). Point "
                "WSL_IMAGES_CACHE at a writable folder (or pass cache_dir=)."
            )
        else:
            raise
        raise DownloadError(msg) from exc
    for old in derived_paths(target):  # made from an older file of this name
        remove_derived(old, [])  # one left (Windows: open) is never used: another source
    drop_obsolete(target)
    _records.remember(target, actual)
    if expected is None and hash_prefix_of(target.name) is None:
        log.warning("%s has no sha256 prefix in its name: downloaded unverified", target.name)
    return actual
