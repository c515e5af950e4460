"""Hashed download cache: files land verified, whole, under the names torch.hub uses.

Safety model (as pooch): download to a temp file of this process in the cache folder, check the
sha256 prefix carried by the file name, fsync, publish with ``os.replace``. A per-file lock makes
concurrent processes download once; without it (a filesystem where locks do not work) each
process downloads its own copy and the last rename wins, with identical, verified content.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock
import torch
from tqdm.auto import tqdm

from . import _records, _transfer
from ._files import cleanup_stale, filename_from_url, open_temp, publish
from ._http import RetriesExhaustedError, TransferOptions
from ._records import sha256_of
from .errors import DownloadError, HashMismatchError, OfflineError
from .loading import converted_path
from .registry import get_weights, hash_prefix_of

__all__ = [
    "TransferOptions",
    "download",
    "download_url",
    "get_cache_dir",
    "hash_prefix_of",
    "is_offline",
    "remove_cached",
    "resolve_url",
    "sha256_of",
    "verify_cached",
]

log = logging.getLogger(__name__)


def get_cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Cache folder: ``override`` > ``$WSL_IMAGES_CACHE`` > ``torch.hub.get_dir()/checkpoints``."""
    if override is not None:
        return Path(override)
    env = os.environ.get("WSL_IMAGES_CACHE")
    if env:
        return Path(env)
    return Path(torch.hub.get_dir()) / "checkpoints"


def is_offline() -> bool:
    """True when ``WSL_IMAGES_OFFLINE`` asks never to open a network connection."""
    return os.environ.get("WSL_IMAGES_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_url(name_or_url: str) -> str:
    """URL of a registered model's file (via ``$WSL_IMAGES_MIRROR`` if set), or the URL itself."""
    if name_or_url.startswith(("http://", "https://")):
        return name_or_url
    weights = get_weights(name_or_url)
    mirror = os.environ.get("WSL_IMAGES_MIRROR")
    if mirror:
        return mirror.rstrip("/") + "/" + weights.filename
    return weights.url


def download(
    name_or_url: str,
    *,
    progress: bool = True,
    check_hash: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The verified cached file of a registered model name or an http(s) URL, fetched if needed."""
    return download_url(
        resolve_url(name_or_url),
        progress=progress,
        check_hash=check_hash,
        cache_dir=cache_dir,
        label=name_or_url,
    )


def download_url(
    url: str,
    *,
    progress: bool = True,
    check_hash: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    options: TransferOptions | None = None,
    label: str | None = None,
) -> Path:
    """Download ``url`` into the cache unless a verified copy is there; return its path.

    ``options`` tunes timeouts, retries and parallel parts (default: from the environment);
    ``label`` is what error messages tell the user to pre-fetch (a model name or the URL).
    """
    filename = filename_from_url(url)
    folder = get_cache_dir(cache_dir)
    target = folder / filename
    expected = hash_prefix_of(filename) if check_hash else None
    if verify_cached(target, expected, repair=not is_offline()):
        return target
    if is_offline():
        msg = (
            f"{filename} is not in the cache {str(folder)!r} and WSL_IMAGES_OFFLINE=1 forbids "
            f"downloading it from {url!r}. Pre-fetch it where there is a network with "
            f"`wsl-images download {label or url}` (then copy {filename} into {folder}), or "
            "unset WSL_IMAGES_OFFLINE (WSL_IMAGES_MIRROR can point at an internal mirror)."
        )
        raise OfflineError(msg)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"Cannot create the cache folder {str(folder)!r} ({exc}): set WSL_IMAGES_CACHE."
        raise DownloadError(msg) from exc
    with _file_lock(target):
        # Another process may have published the file while we waited for the lock.
        if verify_cached(target, expected, repair=True):
            return target
        cleanup_stale(folder)
        try:
            _fetch_into_cache(
                url, target, expected, progress, options or TransferOptions.from_env()
            )
        except RetriesExhaustedError as exc:
            msg = (
                f"{exc} Or pre-fetch it on a machine with network access: `wsl-images download "
                f"{label or url}`, then copy {filename} into {str(folder)!r}."
            )
            raise DownloadError(msg) from exc
    return target


def verify_cached(target: Path, expected: str | None, *, repair: bool) -> bool:
    """True if ``target`` is there and matches ``expected``, hashing it only if no record holds.

    A bad file is removed when ``repair`` (it will be downloaded again) and reported otherwise.
    """
    if not target.is_file():
        return False
    sha = _records.recorded_sha256(target)
    if sha is None:
        log.info("Verifying %s (sha256 of the whole file, once)", target)
        sha = sha256_of(target)
        if expected is None or sha.startswith(expected):
            _records.remember(target, sha)
    if expected is None:
        if hash_prefix_of(target.name) is None:
            log.warning("%s has no sha256 prefix in its name: used unverified", target.name)
        return True
    if sha.startswith(expected):
        return True
    if not repair:
        msg = (
            f"The cached file {str(target)!r} is corrupted: its sha256 is {sha}, but its name "
            f"says {expected}.... It was not loaded. Delete it (`wsl-images cache clear "
            f"{target.name}`) and download it again with network access (unset "
            "WSL_IMAGES_OFFLINE)."
        )
        raise HashMismatchError(msg)
    log.warning(
        "Cached %s has sha256 %s, expected %s...: downloading it again", target, sha, expected
    )
    remove_cached(target)
    return False


def remove_cached(target: Path) -> None:
    """Remove a cached file with its verification record and its converted safetensors copy."""
    for path in (target, converted_path(target), _records.record_path(target)):
        path.unlink(missing_ok=True)


@contextmanager
def _file_lock(target: Path) -> Iterator[None]:
    """Hold the per-file lock if the filesystem allows; go on without it if not."""
    if os.environ.get("WSL_IMAGES_NO_LOCK", "").strip() in {"1", "true", "yes"}:
        yield
        return
    lock_path = _records.meta_dir(target.parent) / f"{target.name}.lock"
    lock = filelock.FileLock(lock_path)
    try:
        _records.meta_dir(target.parent, create=True)
        if lock_path.is_symlink():  # filelock opens with O_TRUNC: never through a planted link
            lock_path.unlink()
        try:
            lock.acquire(timeout=0.5)
        except filelock.Timeout:
            log.info("Waiting for another process downloading %s", target.name)
            lock.acquire()
    except OSError as exc:  # e.g. a filesystem without locks: only bandwidth suffers
        log.warning("Could not lock %s (%s): downloading without the lock", target, exc)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _fetch_into_cache(
    url: str, target: Path, expected: str | None, progress: bool, opts: TransferOptions
) -> None:
    try:
        fd, tmp = open_temp(target)
    except OSError as exc:
        msg = (
            f"Cannot write to the cache folder {str(target.parent)!r} ({exc}). Point "
            "WSL_IMAGES_CACHE at a writable folder (or pass cache_dir=)."
        )
        raise DownloadError(msg) from exc
    show = progress and sys.stderr.isatty()
    try:
        with tqdm(
            unit="B", unit_scale=True, unit_divisor=1024, desc=target.name, disable=not show
        ) as bar:
            actual = _transfer.fetch(url, fd, opts, bar)
        if expected is not None and not actual.startswith(expected):
            msg = (
                f"SHA256 of the file downloaded from {url!r} does not match its name: expected "
                f"{expected}... but got {actual}. The download was deleted. The file may have "
                "been corrupted in transit, or the server (a mirror?) holds another file under "
                "this name: try again, or check the URL / WSL_IMAGES_MIRROR."
            )
            raise HashMismatchError(msg)
        publish(fd, tmp, target)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or isinstance(exc, DownloadError):
            raise
        msg = (
            f"No space left in {str(target.parent)!r} for {target.name} ({exc}). The partial "
            "download was removed and the cache is unchanged. Free some space, or point "
            "WSL_IMAGES_CACHE at a larger disk."
        )
        raise DownloadError(msg) from exc
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)
    converted_path(target).unlink(missing_ok=True)  # a copy of an older file of this name
    _records.remember(target, actual)
    if expected is None:
        log.warning("%s has no sha256 prefix in its name: downloaded unverified", target.name)
