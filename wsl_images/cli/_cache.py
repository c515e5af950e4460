"""``download`` and ``cache list | verify | clear``: the hashed cache from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import _records
from .._files import cleanup_stale
from ..cache import download, get_cache_dir, remove_cached
from ..errors import InvalidInputError
from ..loading import converted_path
from ..registry import get_weights, hash_prefix_of, list_models

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("download", help="pre-fetch model files into the cache")
    p.add_argument("names", nargs="*", metavar="NAME", help="model names (see `list`) or URLs")
    p.add_argument("--all", action="store_true", help="every registered model")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_download)
    cache = sub.add_parser("cache", help="inspect, verify or clear the download cache")
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, func, text in (
        ("list", _list, "cached files: size, verification state, converted copy"),
        ("verify", _verify, "re-hash cached files in full (exit 1 if any is bad)"),
        ("clear", _clear, "remove cached files (with their records and converted copies)"),
    ):
        a = actions.add_parser(action, help=text)
        a.add_argument("names", nargs="*", metavar="NAME", help="model names or cached file names")
        a.set_defaults(func=func)


def _download(args: argparse.Namespace) -> int:
    if bool(args.names) == bool(args.all):
        msg = "give model NAMEs (or URLs) or --all (not both)."
        raise InvalidInputError(msg)
    names = list_models() if args.all else args.names
    for name in names:
        if not name.startswith(("http://", "https://")):
            get_weights(name)  # fail on a bad name before downloading anything
    for name in names:
        print(download(name, progress=not args.no_progress))
    return 0


def _ours(folder: Path) -> list[Path]:
    """Cached files wsl-images knows: registered files and files it recorded (downloads by URL).

    Other files in a folder shared with torch.hub or timm are none of our business.
    """
    registered = {get_weights(m).filename for m in list_models()}
    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith(".") or path.name.endswith(".safetensors"):
            continue
        if path.name in registered or _records.record_path(path).exists():
            found.append(path)
    return found


def _select(names: list[str]) -> list[Path]:
    folder = get_cache_dir()
    if not names:
        return _ours(folder)
    chosen = []
    for name in names:
        filename = name if "/" not in name and (folder / name).exists() else None
        if filename is None:
            filename = get_weights(name).filename  # an unknown name is a usage error here
        chosen.append(folder / filename)
    return chosen


def _list(args: argparse.Namespace) -> int:
    folder = get_cache_dir()
    print(f"cache: {folder}")
    for path in _select(args.names):
        if not path.is_file():
            print(f"{path.name}  not cached")
            continue
        if hash_prefix_of(path.name) is None:
            state = "unverified (no sha256 in the name)"
        elif _records.recorded_sha256(path) is not None:
            state = "verified"
        else:
            state = "not verified yet (hashed on first use)"
        print(f"{path.name}  {path.stat().st_size:,} bytes  {state}")
        converted = converted_path(path)
        if converted.is_file():
            size = converted.stat().st_size
            print(f"  + {converted.name}  {size:,} bytes  (memory-mappable copy)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    bad = 0
    for path in _select(args.names):
        if not path.is_file():
            print(f"{path.name}  not cached")
            continue
        sha = _records.sha256_of(path)
        expected = hash_prefix_of(path.name)
        if expected is not None and not sha.startswith(expected):
            _records.forget(path)
            print(f"{path.name}  BAD: sha256 {sha}, name says {expected}...")
            bad += 1
            continue
        _records.remember(path, sha)
        print(f"{path.name}  ok  sha256 {sha}" + ("" if expected else " (no hash in the name)"))
    if bad:
        print(
            f"{bad} bad file(s): remove them with `wsl-images cache clear NAME`; the next load "
            "or `wsl-images download NAME` fetches them again."
        )
    return 1 if bad else 0


def _clear(args: argparse.Namespace) -> int:
    if not args.names:
        removed = cleanup_stale(get_cache_dir())
        if removed:
            print(f"removed {removed} temp file(s) of interrupted downloads")
    for path in _select(args.names):
        if path.exists() or converted_path(path).exists():
            remove_cached(path)
            print(f"removed {path.name}")
    return 0
