"""Hashed download cache: files land verified, whole, under the names torch.hub uses.

Safety model (as pooch): download to a temp file in the cache folder, check the sha256 prefix
carried by the file name while streaming, fsync, publish with ``os.replace``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import requests
import torch
from tqdm.auto import tqdm

from .errors import DownloadError, HashMismatchError, InvalidInputError, OfflineError
from .registry import get_weights, hash_prefix_of

__all__ = [
    "download",
    "download_url",
    "get_cache_dir",
    "hash_prefix_of",
    "is_offline",
    "resolve_url",
    "sha256_of",
]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT = (10.0, 60.0)  # connect, read (seconds)


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
        resolve_url(name_or_url), progress=progress, check_hash=check_hash, cache_dir=cache_dir
    )


def _filename_from_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        msg = f"Unsupported URL {url!r}: only http:// and https:// URLs can be downloaded."
        raise InvalidInputError(msg)
    name = os.path.basename(parts.path)
    # A name from a URL must never leave the cache folder or be a hidden/special entry.
    if not name or name in {".", ".."} or name.startswith(".") or "\\" in name:
        msg = f"Cannot derive a file name from URL {url!r}: it must end in a file name."
        raise InvalidInputError(msg)
    return name


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in large chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK * 8):
            digest.update(chunk)
    return digest.hexdigest()


def _check_cached(path: Path, url: str, expected: str | None) -> bool:
    """True if ``path`` exists and matches its hash prefix (a bad file is removed)."""
    if not path.is_file():
        return False
    if expected is None:
        return True
    actual = sha256_of(path)
    if actual.startswith(expected):
        return True
    log.warning("Cached %s has sha256 %s, expected %s...: removing it", path, actual, expected)
    path.unlink(missing_ok=True)
    return False


def download_url(
    url: str,
    *,
    progress: bool = True,
    check_hash: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Download ``url`` into the cache unless a verified copy is there; return its path."""
    filename = _filename_from_url(url)
    folder = get_cache_dir(cache_dir)
    target = folder / filename
    expected = hash_prefix_of(filename) if check_hash else None
    if _check_cached(target, url, expected):
        return target
    if is_offline():
        msg = (
            f"{filename} is not in the cache {folder} and WSL_IMAGES_OFFLINE=1 forbids "
            f"downloading it from {url}. Pre-fetch it on a machine with network access "
            f"(`wsl-images download NAME`, then copy {filename} into {folder}), or unset "
            "WSL_IMAGES_OFFLINE / set WSL_IMAGES_MIRROR to an internal mirror."
        )
        raise OfflineError(msg)
    folder.mkdir(parents=True, exist_ok=True)
    _fetch(url, target, expected, progress)
    return target


def _fetch(url: str, target: Path, expected: str | None, progress: bool) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, digest, progress and sys.stderr.isatty(), target.name)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if expected is not None and not actual.startswith(expected):
            msg = (
                f"SHA256 of the file downloaded from {url} does not match its name: expected "
                f"{expected}... but got {actual}. The download was deleted. The file may have "
                "been corrupted in transit or replaced at the source (a mirror with a stale "
                "copy?): try again, or check the URL."
            )
            raise HashMismatchError(msg)
        if expected is None:
            log.warning("%s has no sha256 prefix in its name: downloaded unverified", target.name)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _stream(url: str, out: object, digest: hashlib._Hash, show: bool, label: str) -> None:
    try:
        with requests.get(
            url, stream=True, timeout=_TIMEOUT, headers={"Accept-Encoding": "identity"}
        ) as resp:
            if resp.status_code != 200:
                msg = f"Download of {url} failed: HTTP {resp.status_code} {resp.reason}."
                raise DownloadError(msg)
            total = int(resp.headers.get("Content-Length", 0)) or None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not show) as bar:
                for chunk in resp.iter_content(_CHUNK):
                    out.write(chunk)  # type: ignore[attr-defined]
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                msg = f"Download of {url} ended after {received} of {total} bytes."
                raise DownloadError(msg)
    except requests.RequestException as exc:
        msg = (
            f"Could not download {url}: {exc}. Check the network, pre-fetch the file with "
            "`wsl-images download NAME` where there is a network, or set WSL_IMAGES_MIRROR."
        )
        raise DownloadError(msg) from exc
