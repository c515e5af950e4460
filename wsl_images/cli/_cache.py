"""``download``: pre-fetch files into the hashed cache."""

from __future__ import annotations

import argparse

from ..cache import download
from ..errors import InvalidInputError
from ..registry import get_weights, list_models

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("download", help="pre-fetch model files into the cache")
    p.add_argument("names", nargs="*", metavar="NAME", help="model names (see `list`)")
    p.add_argument("--all", action="store_true", help="every registered model")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_download)


def _download(args: argparse.Namespace) -> int:
    if bool(args.names) == bool(args.all):
        msg = "give model NAMEs or --all (not both)."
        raise InvalidInputError(msg)
    names = list_models() if args.all else args.names
    for name in names:
        get_weights(name)  # fail on a bad name before downloading anything
    for name in names:
        print(download(name, progress=not args.no_progress))
    return 0
