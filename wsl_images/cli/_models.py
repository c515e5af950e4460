"""``list`` and ``info``: what the registry knows. Pure data: no torch, no torchvision."""

from __future__ import annotations

import argparse
import sys

from ..cache import get_cache_dir
from ..zoo import get_weights, info_lines, list_models, robustness, suggest_names

__all__ = ["listing", "matching", "notes", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("list", help="models with params, GFLOPs, accuracy and cache state")
    p.add_argument(
        "pattern",
        nargs="?",
        help="a word: models whose name or alias contains it ('swsl', 'resnet50', 'ig_'); "
        "with * ? [ ]: an fnmatch pattern over the names ('*_swsl'); not case-sensitive",
    )
    p.set_defaults(func=_list)
    p = sub.add_parser("info", help="everything the registry knows about one model")
    p.add_argument("name", help="model name or alias (timm's or a legacy name)")
    p.set_defaults(func=_info)


def matching(pattern: str | None) -> list[str]:
    """The models ``wsl-images list PATTERN`` shows, sorted.

    A pattern with a glob character (``*?[``) is :func:`list_models`' fnmatch pattern; a plain
    word matches every model whose name, or one of whose aliases, contains it. Either way
    case does not matter (every name is lower case).
    """
    if pattern is None:
        return list_models()
    word = pattern.strip().lower()
    if any(c in word for c in "*?["):
        return list_models(word)
    return [
        name
        for name in list_models()
        if word in name or any(word in alias.lower() for alias in get_weights(name).aliases)
    ]


def listing(pattern: str | None = None) -> list[str]:
    """The table of ``wsl-images list``: a header, then one row per model. A published top-1
    that the released file does not reach is marked ``!`` (see :func:`notes`)."""
    folder = get_cache_dir()
    lines = [f"{'model':<24} {'params':>13} {'GFLOPs':>6} {'top-1':>6} {'top-5':>6}  cached"]
    for name in matching(pattern):
        w = get_weights(name)
        cached = "yes" if (folder / w.filename).is_file() else "no"
        top1 = f"{w.top1:.1f}" + ("!" if w.known_issue else "")
        lines.append(
            f"{name:<24} {w.num_params:>13,} {w.gflops:>6g} {top1:>6} {w.top5:>6.1f}  {cached}"
        )
    return lines


def notes(pattern: str | None = None) -> list[str]:
    """The lines under the table: the known issue of each listed model marked ``!``."""
    return [
        f"! {name}: known issue: {w.known_issue} (wsl-images info {name})."
        for name in matching(pattern)
        if (w := get_weights(name)).known_issue
    ]


def _list(args: argparse.Namespace) -> int:
    if not matching(args.pattern):
        close = suggest_names(args.pattern)
        hint = f" Close names: {', '.join(close)}." if close else ""
        print(
            f"wsl-images list: no model matches {args.pattern!r}.{hint} Run `wsl-images list` "
            "for all of them.",
            file=sys.stderr,
        )
        return 1
    print("\n".join([*listing(args.pattern), *notes(args.pattern)]))
    return 0


def _info(args: argparse.Namespace) -> int:
    w = get_weights(args.name)
    print(w.name)
    print("\n".join(info_lines(w)))
    print(f"Robustness, top-1/top-5 (timm): {robustness(w.name).describe()}")
    cached = get_cache_dir() / w.filename
    print(f"Cached: {cached if cached.is_file() else 'no'}")
    return 0
