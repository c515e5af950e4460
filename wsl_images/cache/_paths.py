"""Where things are in the cache: the folder, file names from URLs, the bookkeeping folder.

Pure path logic: nothing here opens a connection or imports torch. The cache folder is the one
torch.hub uses (``torch.hub.get_dir()/checkpoints``), computed by torch's own rule when torch is
not imported yet, so ``wsl-images list`` answers without loading torch.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .._util import temp_name
from ..errors import InvalidInputError
from ._env import env_flag

__all__ = [
    "DERIVED",
    "LAYOUT",
    "META",
    "Failures",
    "content_sha256",
    "content_source",
    "derived_key",
    "derived_path",
    "derived_paths",
    "filename_from_url",
    "get_cache_dir",
    "is_offline",
    "lock_path",
    "meta_dir",
    "obsolete_copies",
    "record_path",
    "remove_derived",
    "remove_file",
    "remove_tree",
    "source_name_of",
    "why_not_removed",
]

log = logging.getLogger(__name__)

META = ".wsl-images"  # our bookkeeping inside a cache folder shared with torch.hub and timm
DERIVED = "derived"  # data derived from sources, by key, inside META
LAYOUT = "layout"  # the key of a source's tensor layout
_LAYOUT_SUFFIX = ".layout.json"  # the layout's file: SOURCE.layout.json
_KEY_SEPARATOR = "~"  # other keys' files: SOURCE~KEY (no cache file name holds a "~")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_RECORD_SUFFIX = ".verified"
# A source known by its content alone (a user's file outside the cache): ``sha256-<64 hex>``,
# never a file in the cache folder; what is derived from it is tied to that sha256.
_CONTENT = re.compile(r"sha256-(?P<sha>[0-9a-f]{64})")
# Full weight copies that development builds kept, never read: a safetensors copy beside the
# source, and a memory-mappable zip copy (with its record) in DERIVED.
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


def derived_path(source: Path, key: str = LAYOUT) -> Path:
    """Where the data derived from a cached source under ``key`` is kept (``key``: letters,
    digits, ``.``, ``_``, ``-``; e.g. an engine's graph for one exporter version)."""
    if not _KEY.fullmatch(key):
        msg = f"Derived-file key {key!r} is not valid: use letters, digits, '.', '_' and '-'."
        raise InvalidInputError(msg)
    name = source.name + _LAYOUT_SUFFIX if key == LAYOUT else source.name + _KEY_SEPARATOR + key
    return meta_dir(source.parent) / DERIVED / name


def derived_paths(source: Path) -> list[Path]:
    """Every file (or folder of files) derived from ``source`` that is there, sorted (layout
    first)."""
    folder = meta_dir(source.parent) / DERIVED
    found = [derived_path(source)] if derived_path(source).is_file() else []
    if folder.is_dir():
        prefix = source.name + _KEY_SEPARATOR
        found += sorted(
            folder / entry.name
            for entry in os.scandir(folder)
            if entry.name.startswith(prefix)
            and (entry.is_file(follow_symlinks=False) or entry.is_dir(follow_symlinks=False))
        )
    return found


def content_source(sha256: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The stand-in source of a file known by its content alone (a user's checkpoint outside
    the cache): ``CACHE/sha256-<hex>``, never a file; data derived from it is kept under that
    name, tied to that sha256, and listed, verified and cleared like any source's."""
    if _CONTENT.fullmatch(f"sha256-{sha256}") is None:
        msg = f"{sha256!r} is not a sha256 (64 lowercase hex digits)."
        raise InvalidInputError(msg)
    return get_cache_dir(cache_dir) / f"sha256-{sha256}"


def content_sha256(source: Path) -> str | None:
    """The sha256 a stand-in source (:func:`content_source`) names; None for any other path,
    and for one that is a file (then it is a real source, checked like any other)."""
    match = _CONTENT.fullmatch(source.name)
    if match is None or os.path.lexists(source):
        return None
    return match["sha"]


def derived_key(source: Path, derived: Path) -> str:
    """The key a file derived from ``source`` was kept under."""
    if derived.name == source.name + _LAYOUT_SUFFIX:
        return LAYOUT
    return derived.name.removeprefix(source.name + _KEY_SEPARATOR)


def source_name_of(derived: str) -> str | None:
    """The source file name a derived or obsolete file in DERIVED was made from (None: not ours)."""
    if derived.startswith("."):  # a temp file being written
        return None
    if _KEY_SEPARATOR in derived:
        return derived.split(_KEY_SEPARATOR, 1)[0]
    for suffix in (_LAYOUT_SUFFIX, *_OBSOLETE_SUFFIXES[1:]):
        if derived.endswith(suffix):
            return derived.removesuffix(suffix)
    return None


def lock_path(source: Path) -> Path:
    """The per-file lock serialising downloads of ``source``."""
    return meta_dir(source.parent) / f"{source.name}.lock"


def obsolete_copies(source: Path) -> tuple[Path, ...]:
    """Where development builds kept full copies of ``source`` (removed when seen)."""
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


def remove_tree(path: Path, failed: Failures) -> bool:
    """Remove the folder ``path``: renamed to a temp name first, so no reader ever sees it half
    removed (and a removal cut short leaves a temp folder, which the next cleanup removes).
    True if it was removed; False if it was not there or could not be renamed (then it is
    added to ``failed``: on Windows, a file in it is open)."""
    if not os.path.lexists(path):
        return False
    if path.is_symlink() or not path.is_dir():
        return remove_file(path, failed)
    doomed = path.with_name(temp_name(path.name))
    try:
        os.rename(path, doomed)
    except FileNotFoundError:  # removed by another process meanwhile
        return False
    except OSError as exc:
        failed.append((path, why_not_removed(exc)))
        return False
    shutil.rmtree(doomed, ignore_errors=True)
    return True


def remove_derived(path: Path, failed: Failures) -> bool:
    """Remove a derived file or folder (see :func:`remove_file`, :func:`remove_tree`)."""
    if path.is_dir() and not path.is_symlink():
        return remove_tree(path, failed)
    return remove_file(path, failed)


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
