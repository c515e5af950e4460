"""The ``wsl-images`` command. Each sub-module registers its subcommands on the shared parser.

Owns: arguments, exit codes and what is printed; it prints what library functions return and
does no work of its own. May use: every other folder (it is the top layer).

Startup is part of the interface: ``--help``, ``list``, ``info`` and usage errors must answer
without importing torch or torchvision. So a command's module is imported only when that
command runs (or its own ``--help`` is asked for); the others appear in the top-level help
from :data:`COMMANDS` alone. Modules keep heavy imports inside their handlers, too.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Collection, Sequence

from .. import __version__
from ..errors import InvalidInputError, UnknownModelError, WslImagesError

__all__ = ["COMMANDS", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Subcommand -> (module registering it, one-line help as that module gives it). Order = --help's.
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("_models", "models with params, GFLOPs, accuracy and cache state"),
    "info": ("_models", "everything the registry knows about one model"),
    "download": ("_cache", "pre-fetch model files into the cache"),
    "cache": ("_cache", "inspect, verify or clear the download cache"),
    "classify": ("_predict", "label images with ImageNet classes"),
    "embed": ("_predict", "pooled features (2048-d, 512-d for ResNet-18)"),
    "evaluate": ("_evaluate", "top-1/top-5 on an ImageNet-style folder (val, V2, R, A, Sketch)"),
    "export": ("_export", "export to ONNX or TorchScript; the file is checked against PyTorch"),
}


def build_parser(commands: Collection[str] = ()) -> argparse.ArgumentParser:
    """The parser, with full options for ``commands`` (the rest: name and help only)."""
    parser = argparse.ArgumentParser(
        prog="wsl-images",
        description="Facebook AI's WSL/SSL/SWSL ImageNet models: list, fetch, classify, embed.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is being done")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = {COMMANDS[c][0] for c in commands}
    for command, (module, text) in COMMANDS.items():
        if command in sub.choices:
            continue  # registered with its module's other commands
        if module in wanted:
            importlib.import_module(f".{module}", __name__).register(sub)
        else:
            sub.add_parser(command, help=text)
    return parser


def _command_in(argv: Sequence[str]) -> list[str]:
    """The subcommand named in ``argv`` (the first word that is not an option), if known."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return [word] if word in COMMANDS else []


def _place_late_positionals(
    args: argparse.Namespace, extra: list[str], parser: argparse.ArgumentParser
) -> None:
    """Positionals given after options (``evaluate NAME --checkpoint X DIR``).

    argparse fills a command's optional positionals (``DIR``, ``PATH...``) from the first run of
    positionals only, and calls any later one unrecognised. A command names the attribute that
    takes them (``set_defaults(late=...)``): a list is extended, an empty single value set.
    """
    words = [w for w in extra if not w.startswith("-") or w == "-"]
    late = getattr(args, "late", None)
    if late is not None and words and len(words) == len(extra):
        current = getattr(args, late)
        if isinstance(current, list):
            current.extend(words)
            return
        if current is None and len(words) == 1:
            setattr(args, late, words[0])
            return
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 some inputs failed, 2 usage)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(argv))
    args, extra = parser.parse_known_args(argv)
    _place_late_positionals(args, extra, parser)
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
