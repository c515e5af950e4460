"""``list`` and ``info``: what the registry knows. Pure data: no torch, no torchvision."""

from __future__ import annotations

import argparse

from ..cache import get_cache_dir
from ..zoo import get_weights, info_lines, list_models, robustness

__all__ = ["listing", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("list", help="models with params, GFLOPs, accuracy and cache state")
    p.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. '*_swsl'")
    p.set_defaults(func=_list)
    p = sub.add_parser("info", help="everything the registry knows about one model")
    p.add_argument("name", help="model name or alias (timm's or a legacy name)")
    p.set_defaults(func=_info)


def listing(pattern: str | None = None) -> list[str]:
    """The lines of ``wsl-images list``: a header, then one row per model."""
    folder = get_cache_dir()
    lines = [f"{'model':<24} {'params':>13} {'GFLOPs':>6} {'top-1':>6} {'top-5':>6}  cached"]
    for name in list_models(pattern):
        w = get_weights(name)
        cached = "yes" if (folder / w.filename).is_file() else "no"
        lines.append(
            f"{name:<24} {w.num_params:>13,} {w.gflops:>6g} {w.top1:>6.1f} {w.top5:>6.1f}  {cached}"
        )
    return lines


def _list(args: argparse.Namespace) -> int:
    print("\n".join(listing(args.pattern)))
    return 0


def _info(args: argparse.Namespace) -> int:
    w = get_weights(args.name)
    print(w.name)
    print("\n".join(info_lines(w)))
    print(f"Robustness, top-1/top-5 (timm): {robustness(w.name).describe()}")
    cached = get_cache_dir() / w.filename
    print(f"Cached: {cached if cached.is_file() else 'no'}")
    return 0
