"""``evaluate``: top-1/top-5 of a model on an ImageNet-style folder (re-measure the table).

Parser construction uses argparse only, so ``wsl-images --help`` starts at once; torch and the
pipeline are imported by the handler. Under ``torchrun`` every rank runs the same command on its
share of the batches and rank 0 prints and writes the result.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

__all__ = ["register"]

_DTYPES = ("float32", "bfloat16", "float16")
ENGINES = ("torch", "onnxruntime")  # wsl_images.inference.ENGINES, without importing torch


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evaluate",
        help="top-1/top-5 on an ImageNet-style folder (val, V2, R, A, Sketch)",
        description="Top-1/top-5 of NAME on DIR: one folder per class, named by WordNet id "
        "(n01440764/ ...: ImageNet val, -Sketch, -R, -A) or by class index (0/ ... 999/: "
        "ImageNet-V2). A subset of the 1000 classes restricts the logits to it. Exit code 1 "
        "if some images could not be read (they are listed, not scored).",
    )
    p.add_argument("name", metavar="NAME", help="model name (wsl-images list)")
    p.add_argument("dir", nargs="?", metavar="DIR", help="the folder of class folders")
    p.add_argument("--data", metavar="DIR", help="the same as DIR (an older spelling)")
    p.add_argument("--checkpoint", metavar="PATH_OR_URL", help="evaluate this state dict instead")
    p.add_argument(
        "--no-check-hash",
        dest="check_hash",
        action="store_false",
        help="use a --checkpoint URL whose name only looks hashed (ckpt-epoch-10.pth: the part "
        "after the last '-' is not the start of its sha256); only for a source you trust",
    )
    p.add_argument(
        "--batch-size",
        type=_at_least(1),
        metavar="N",
        help=(
            "images per forward (default: on a CPU 8, or 32 with --engine onnxruntime; on a GPU "
            "by model size, 256 for ResNet-50)"
        ),
    )
    p.add_argument(
        "--workers", type=_at_least(0), metavar="W", help="decoding processes (default: auto)"
    )
    p.add_argument(
        "--device", default="auto", metavar="D", help="auto (CUDA > MPS > CPU), cpu, cuda:N, mps"
    )
    p.add_argument(
        "--dtype",
        choices=_DTYPES,
        default="float32",
        help="autocast dtype for the forward pass (bfloat16/float16: mixed precision, for GPUs)",
    )
    p.add_argument(
        "--limit", type=_at_least(1), metavar="N", help="at most N images, spread across classes"
    )
    p.add_argument(
        "--output", "-o", metavar="FILE.json", help="write the full result here (atomically)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="torch",
        help="what runs the model: torch (default) or onnxruntime (CPUs: faster; needs "
        "wsl-images[onnxruntime]; its graph is exported once and kept in the cache)",
    )
    p.add_argument(
        "--decode",
        choices=("auto", "cpu", "gpu"),
        default="cpu",
        help="where JPEGs are decoded: cpu (Pillow, full decode, as published evaluations), "
        "auto (on CUDA the GPU decodes a share beside the CPU workers), gpu (nvJPEG; needs "
        "CUDA) (default cpu)",
    )
    p.set_defaults(func=_evaluate, late="dir")


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            msg = f"must be a whole number >= {minimum}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def _data(args: argparse.Namespace) -> str:
    """The folder: DIR or --data DIR (both: they must name the same folder)."""
    from ..errors import InvalidInputError

    if args.dir is None and args.data is None:
        msg = "No data folder: give DIR (wsl-images evaluate NAME DIR), a folder of class folders."
        raise InvalidInputError(msg)
    if args.dir is not None and args.data is not None:
        same = os.path.abspath(os.path.expanduser(args.dir)) == os.path.abspath(
            os.path.expanduser(args.data)
        )
        if not same:
            msg = f"DIR {args.dir!r} and --data {args.data!r} differ: give the folder once."
            raise InvalidInputError(msg)
    return str(args.dir if args.dir is not None else args.data)


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from ._output import check_output, open_output

    data = _data(args)  # usage errors first: they answer without importing torch
    check_output(args.output)
    from ..distributed import init_from_env, leaving
    from ..evaluation import evaluate

    ctx = init_from_env(args.device)
    with leaving(ctx):
        result = evaluate(
            args.name,
            data,
            checkpoint_path=args.checkpoint,
            check_hash=args.check_hash,
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device,
            dtype=args.dtype,
            limit=args.limit,
            progress=not args.no_progress,
            context=ctx,
            engine=args.engine,
            decode=args.decode,
        )
    if ctx.is_main:
        print(result.summary())
        for failure in result.failures[:10]:
            print(f"unreadable: {failure.path}: {failure.error}", file=sys.stderr)
        if result.failed > 10:
            where = f"all in {args.output}" if args.output else "--output FILE.json lists all"
            print(f"... {result.failed - 10} more unreadable images ({where})", file=sys.stderr)
        if args.output:
            with open_output(args.output) as out:
                json.dump(result.as_dict(), out, indent=1)
                out.write("\n")
    return ctx.exit_status(failed=result.failed > 0)
