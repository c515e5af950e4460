"""The ``wsl-images`` command. Each sub-module registers its subcommands on the shared parser."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import InvalidInputError, UnknownModelError, WslImagesError
from . import _cache, _evaluate, _export, _models, _predict

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsl-images",
        description="Facebook AI's WSL/SSL/SWSL ImageNet models: list, fetch, classify, embed.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is being done")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (_models, _cache, _predict, _evaluate, _export):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 some inputs failed, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="wsl-images: %(levelname)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except (UnknownModelError, InvalidInputError) as exc:
        print(f"wsl-images {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WslImagesError as exc:
        print(f"wsl-images {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("wsl-images: interrupted", file=sys.stderr)
        return 130
    return code
