"""Where things are in the cache: the folder, file names from URLs, the bookkeeping folder.

Pure path logic: nothing here opens a connection or imports torch. The cache folder is the one
torch.hub uses (``torch.hub.get_dir()/checkpoints``), computed by torch's own rule when torch is
not imported yet, so ``wsl-images list`` answers without loading torch.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import InvalidInputError
from ._env import env_flag

__all__ = [
    "DERIVED",
    "META",
    "Failures",
    "derived_path",
    "filename_from_url",
    "get_cache_dir",
    "is_offline",
    "lock_path",
    "meta_dir",
    "obsolete_copies",
    "record_path",
    "remove_file",
    "source_name_of",
    "why_not_removed",
]

log = logging.getLogger(__name__)

META = ".wsl-images"  # our bookkeeping inside a cache folder shared with torch.hub and timm
DERIVED = "derived"  # data derived from sources (their layouts), inside META
_DERIVED_SUFFIX = ".layout.json"
_RECORD_SUFFIX = ".verified"
# Full copies kept by older versions, now unused: 0.1's safetensors copy beside the source, and
# 0.2's memory-mappable zip copy (with its record) in DERIVED.
_OBSOLETE_SUFFIXES = (".safetensors", ".mmap.pt", ".mmap.pt" + _RECORD_SUFFIX)


def get_cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Cache folder: ``override`` > ``$WSL_IMAGES_CACHE`` > ``torch.hub.get_dir()/checkpoints``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("WSL_IMAGES_CACHE")
    if env:
        return Path(env).expanduser()
    torch = sys.modules.get("torch")
    hub = getattr(torch, "hub", None)
    if hub is not None:  # respects torch.hub.set_dir()
        return Path(hub.get_dir()) / "checkpoints"
    # torch.hub's rule (_get_torch_home): $TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache.
    cache_home = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.environ.get("TORCH_HOME", os.path.join(cache_home, "torch"))
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


def is_offline() -> bool:
    """True when ``WSL_IMAGES_OFFLINE`` asks never to open a network connection (a value that
    is neither on nor off raises: a typo must not quietly mean "online")."""
    return env_flag("WSL_IMAGES_OFFLINE")


def filename_from_url(url: str) -> str:
    """The cache file name for an http(s) URL: its last path segment, which must be a plain name."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        msg = f"Unsupported URL {url!r}: only http:// and https:// URLs can be downloaded."
        raise InvalidInputError(msg)
    name = unquote(parts.path.rsplit("/", 1)[-1])
    # A name from a URL must never leave the cache folder or be a hidden/special entry.
    bad = not name or name.startswith(".") or any(c in name for c in "/\\\0~")
    if bad or name.endswith((".part", ".lock", _RECORD_SUFFIX)):
        msg = (
            f"Cannot derive a cache file name from URL {url!r}: its path must end in a plain "
            "file name (not empty, not hidden, no slashes or '~', not .part/.lock/.verified)."
        )
        raise InvalidInputError(msg)
    return name


def meta_dir(folder: Path, *, create: bool = False) -> Path:
    """The hidden folder of records, locks and derived files inside a cache folder.

    ``create`` makes it (and its ``derived`` folder), replacing symlinks planted there: files
    are written (and lock files truncated) in it, so they must never land outside the cache.
    """
    meta = folder / META
    if create:
        for path in (meta, meta / DERIVED):
            if path.is_symlink():
                log.warning("Replacing the symlink %s planted in the cache by a folder", path)
                path.unlink()
            path.mkdir(exist_ok=True)
    return meta


def record_path(path: Path) -> Path:
    """The verification record of a cached source."""
    return meta_dir(path.parent) / f"{path.name}{_RECORD_SUFFIX}"


def derived_path(source: Path) -> Path:
    """Where the layout derived from a cached source is kept."""
    return meta_dir(source.parent) / DERIVED / f"{source.name}{_DERIVED_SUFFIX}"


def source_name_of(derived: str) -> str | None:
    """The source file name a derived or obsolete file in DERIVED was made from (None: not ours)."""
    for suffix in (_DERIVED_SUFFIX, *_OBSOLETE_SUFFIXES[1:]):
        if derived.endswith(suffix):
            return derived.removesuffix(suffix)
    return None


def lock_path(source: Path) -> Path:
    """The per-file lock serialising downloads of ``source``."""
    return meta_dir(source.parent) / f"{source.name}.lock"


def obsolete_copies(source: Path) -> tuple[Path, ...]:
    """Where older versions kept full copies of ``source`` (removed when seen)."""
    old, *in_derived = _OBSOLETE_SUFFIXES
    copies = meta_dir(source.parent) / DERIVED
    return (source.with_name(source.name + old), *(copies / (source.name + s) for s in in_derived))


Failures = list[tuple[Path, str]]  # (path, why) of each file that could not be removed


def remove_file(path: Path, failed: Failures) -> bool:
    """Remove ``path``: True if it was removed; False if it was not there, or could not be
    removed (then it is added to ``failed`` with the reason). Nothing is tried on a path that
    does not exist: on a read-only file system even that fails (EROFS), not with ENOENT."""
    if not os.path.lexists(path):
        return False
    try:
        path.unlink()
    except FileNotFoundError:  # removed by another process meanwhile
        return False
    except OSError as exc:
        failed.append((path, why_not_removed(exc)))
        return False
    return True


def why_not_removed(exc: OSError) -> str:
    """Why a file could not be removed, with what to do, for a message."""
    if exc.errno == errno.EROFS:
        return f"the cache is on a read-only file system ({exc.strerror})"
    if isinstance(exc, PermissionError):
        return (
            f"{exc.strerror or exc}: a process holds it open or mapped (on Windows: a model "
            "loaded from it; free it with `del model` or end that process), or the folder's "
            "permissions forbid it"
        )
    return str(exc.strerror or exc)
