"""``classify``: label images with a pretrained model."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TextIO

from ..predict import DEFAULT_MODEL, Classifier, Prediction, expand_paths

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("classify", help="label images with ImageNet classes")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, or - (stdin)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL})")
    p.add_argument("--checkpoint", help="local file or URL of a state dict to use instead")
    p.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--format", choices=("table", "jsonl", "csv"), default="table")
    p.add_argument("--output", "-o", help="write here instead of stdout")
    p.set_defaults(func=_classify)


def _inputs(items: list[str]) -> list[Path]:
    if "-" in items:
        stdin_items = [line.strip() for line in sys.stdin if line.strip()]
        items = [x for x in items if x != "-"] + stdin_items
    return expand_paths(items)


def _classify(args: argparse.Namespace) -> int:
    paths = _inputs(args.paths)
    clf = Classifier(
        args.model, checkpoint_path=args.checkpoint, device=args.device, batch_size=args.batch_size
    )
    results = clf.predict(paths, top_k=args.top_k)
    sink = open(args.output, "w", encoding="utf-8") if args.output else nullcontext(sys.stdout)  # noqa: SIM115
    with sink as out:
        _write(out, args.format, paths, results)
    return 0


def _write(out: TextIO, fmt: str, paths: list[Path], results: list[Prediction]) -> None:
    writer = csv.writer(out) if fmt == "csv" else None
    if writer:
        writer.writerow(["path", "rank", "label", "index", "probability"])
    for path, pred in zip(paths, results, strict=True):
        if fmt == "jsonl":
            out.write(json.dumps({"path": str(path), "predictions": pred.as_dicts()}) + "\n")
        elif writer:
            for rank, d in enumerate(pred.as_dicts(), 1):
                writer.writerow([path, rank, d["label"], d["index"], f"{d['probability']:.6f}"])
        else:
            out.write(f"{path}\n")
            for d in pred.as_dicts():
                out.write(f"  {d['probability']:7.2%}  {d['label']} ({d['index']})\n")
