"""``download`` and ``cache list | verify | clear``: the cache API's results, printed.

The work is done by :mod:`wsl_images.models` (``download``, ``scan_cache``, ``verify_cache``,
``clear_cache``), imported inside the handlers so the parser builds without it.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cache import CacheEntry

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
        ("list", _list, "cached files: size, verification state, derived files"),
        ("verify", _verify, "re-hash cached files and their copies in full (exit 1 if any is bad)"),
        ("clear", _clear, "remove cached files with their records and derived files"),
    ):
        a = actions.add_parser(action, help=text)
        a.add_argument("names", nargs="*", metavar="NAME", help="model names or cached file names")
        a.set_defaults(func=func)


def _download(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError
    from ..models import download
    from ..zoo import get_weights, list_models

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


def _entries(names: list[str]) -> list[CacheEntry]:
    """scan_cache()'s entries named by model names, aliases or file names (all without names);
    a name that is none of these is a usage error, as for ``verify`` and ``clear``."""
    from ..models import cache_files, scan_cache

    wanted = set(cache_files(names) or ()) if names else None
    return [e for e in scan_cache() if wanted is None or e.path.name in wanted]


def _list(args: argparse.Namespace) -> int:
    from ..cache import get_cache_dir

    entries = _entries(args.names)
    print(f"cache: {get_cache_dir()}")
    for e in entries:
        if e.content_only:
            state = "a file outside the cache, by its sha256: only what was derived from it"
        elif not e.exists:
            state = "missing (copies of it remain: `wsl-images cache clear` removes them)"
        elif e.verified:
            state = "verified" if e.hash_in_name else "verified against its first download"
        else:
            state = "not verified yet (hashed on first use)"
        label = e.path.name if e.name == e.path.name else f"{e.path.name} ({e.name})"
        print(f"{label}  {e.size:,} bytes  {state}")
        for d in e.derived:
            if d.obsolete:
                what = "obsolete full copy, unused: removed on the next load"
            elif d.folder:
                state = "verified" if d.verified else "not verified yet (hashed on next use)"
                what = f"{d.key} (a folder), {state}"
            else:
                kind = "layout of its tensors" if d.key == "layout" else d.key
                what = f"{kind}, " + ("verified" if d.verified else "stale")
            print(f"  + {d.path.name}  {d.size:,} bytes  {what}")
    total = sum(e.size_on_disk for e in entries)
    print(f"{len(entries)} file(s), {total:,} bytes on disk")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..models import verify_cache

    bad = verify_cache(args.names or None)  # first: an unknown name is a usage error
    checked = _entries(args.names)
    for b in bad:
        print(f"BAD {b.path}: {b.reason}")
    files = sum(e.exists + sum(not d.obsolete for d in e.derived) for e in checked)
    if bad:
        print(f"{len(bad)} bad file(s) of {max(files, len(bad))} hashed")
        return 1
    print(f"{files} file(s) hashed in full: all ok")
    return 0


def _clear(args: argparse.Namespace) -> int:
    import sys

    from ..errors import ClearCacheError
    from ..models import clear_cache

    try:
        removed = clear_cache(args.names or None)
    except ClearCacheError as exc:  # the rest was removed: say what, then what was left
        for path in exc.removed:
            print(f"removed {path}")
        print(f"wsl-images cache: error: {exc}", file=sys.stderr)
        return 1
    for path in removed:
        print(f"removed {path}")
    return 0
