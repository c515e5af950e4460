"""``export``: a model to ONNX or TorchScript, checked against PyTorch before it is kept."""

from __future__ import annotations

import argparse

from ..export import ATOL, FORMATS, RTOL, export_model

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export", help="export to ONNX or TorchScript; the file is checked against PyTorch"
    )
    p.add_argument("name", help="model name, e.g. resnet50_swsl")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    p.add_argument("--checkpoint", help="local file or URL of a state dict to export instead")
    p.add_argument("--num-classes", type=int, default=1000, help="outputs of the checkpoint's fc")
    p.add_argument("--dynamic-batch", action="store_true", help="ONNX: any batch size")
    p.add_argument("--image-size", type=int, default=224, help="side of the check batch")
    p.add_argument("--atol", type=float, default=ATOL, help=f"default {ATOL:g}")
    p.add_argument("--rtol", type=float, default=RTOL, help=f"default {RTOL:g}")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    result = export_model(
        args.name,
        args.output,
        format=args.format,
        checkpoint_path=args.checkpoint,
        num_classes=args.num_classes,
        dynamic_batch=args.dynamic_batch,
        image_size=args.image_size,
        atol=args.atol,
        rtol=args.rtol,
    )
    print(
        f"Wrote {result.path} ({result.format}). Checked against PyTorch on a random batch of "
        f"{result.batch_size}: max |diff| {result.max_abs_diff:.2e} "
        f"(tolerance {result.atol:g} + {result.rtol:g} * |value|)."
    )
    return 0
