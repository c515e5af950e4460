"""``export``: a model to ONNX or TorchScript, checked against PyTorch before it is kept."""

from __future__ import annotations

import argparse
import sys

from ..errors import InvalidInputError
from ..export import ATOL, FORMATS, RTOL  # constants only: export imports torch when it runs
from ._output import check_output, format_from

__all__ = ["register"]

_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".torchscript": "torchscript"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export", help="export to ONNX or TorchScript; the file is checked against PyTorch"
    )
    p.add_argument("name", help="model name, e.g. resnet50_swsl")
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="default: from the extension of -o (.onnx: onnx; .pt, .torchscript: torchscript)",
    )
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    p.add_argument("--checkpoint", help="local file or URL of a state dict to export instead")
    p.add_argument(
        "--no-check-hash",
        dest="check_hash",
        action="store_false",
        help="use a --checkpoint URL whose name only looks hashed (ckpt-epoch-10.pth: the part "
        "after the last '-' is not the start of its sha256); only for a source you trust",
    )
    p.add_argument("--num-classes", type=int, default=1000, help="outputs of the checkpoint's fc")
    p.add_argument(
        "--static-batch",
        action="store_true",
        help="ONNX: a model that takes batches of exactly 1 (default: any batch size)",
    )
    # Published before the batch became dynamic by default: accepted for one more release.
    p.add_argument("--dynamic-batch", action="store_true", help="deprecated: now the default")
    p.add_argument("--image-size", type=int, default=224, help="side of the check batch")
    p.add_argument("--atol", type=float, default=ATOL, help=f"default {ATOL:g}")
    p.add_argument("--rtol", type=float, default=RTOL, help=f"default {RTOL:g}")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from ..export import export_model

    check_output(args.output, "-o")
    fmt = args.format or format_from(args.output, _SUFFIXES, None)
    if fmt is None:
        msg = (
            f"-o {args.output!r}: its extension names no format; give --format "
            f"{'|'.join(FORMATS)}, or name the file .onnx (ONNX) or .pt (TorchScript)."
        )
        raise InvalidInputError(msg)
    if args.dynamic_batch and args.static_batch:
        msg = "--dynamic-batch and --static-batch contradict each other; give one at most."
        raise InvalidInputError(msg)
    if args.dynamic_batch:
        print(
            "wsl-images export: --dynamic-batch is deprecated: a dynamic batch is now the "
            "default (--static-batch opts out); the flag will be removed in the next release.",
            file=sys.stderr,
        )
    result = export_model(
        args.name,
        args.output,
        format=next(f for f in FORMATS if f == fmt),  # as typed: one of FORMATS
        checkpoint_path=args.checkpoint,
        check_hash=args.check_hash,
        num_classes=args.num_classes,
        dynamic_batch=not args.static_batch,
        image_size=args.image_size,
        atol=args.atol,
        rtol=args.rtol,
    )
    sizes = " and ".join(str(b) for b in result.batch_sizes)
    checked = f"random batches of {sizes}" if len(result.batch_sizes) > 1 else f"a batch of {sizes}"
    batch = "1" if result.format == "onnx" and args.static_batch else "any"
    weights = ""
    if result.data_path is not None:
        weights = f", with its weights in {result.data_path.name} beside it (keep them together)"
    print(
        f"Wrote {result.path} ({result.format}, batch size: {batch}){weights}. Checked against "
        f"PyTorch on {checked}: max |diff| {result.max_abs_diff:.2e} "
        f"(tolerance {result.atol:g} + {result.rtol:g} * |value|)."
    )
    return 0
