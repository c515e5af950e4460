"""``classify`` and ``embed``: label images, or write their pooled features.

Both run on :class:`wsl_images.Classifier`'s pipeline; under ``torchrun`` every rank runs the
same command on its share of the batches and rank 0 writes the merged output. torch, numpy and
PIL are imported by the handlers, not here, so building the parser stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_file
from ..errors import InvalidInputError
from ..registry import DEFAULT_MODEL
from ._output import ClassifyWriter, EmbeddingWriter, check_output, open_output

if TYPE_CHECKING:
    from ..distributed import Context
    from ..predict import Classifier, Outcome

    Body = Callable[[Context, Classifier, list[str]], int]

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("classify", help="label images with ImageNet classes")
    _common(p)
    p.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--format", choices=("table", "jsonl", "csv"), default="table")
    p.add_argument("--output", "-o", help="write here (atomically) instead of stdout")
    p.set_defaults(func=_classify)

    p = sub.add_parser("embed", help="pooled features (2048-d, 512-d for ResNet-18)")
    _common(p)
    p.add_argument(
        "--format",
        choices=("npy", "jsonl"),
        help="npy: FILE.npy matrix (row i = input i, NaN rows for failed inputs) + FILE.jsonl "
        "index; jsonl: one line per input with its embedding (default: npy when --output "
        "ends in .npy, else jsonl)",
    )
    p.add_argument("--output", "-o", help="write here (atomically) instead of stdout")
    p.set_defaults(func=_embed)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, or - (stdin)")
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"model name or alias (default {DEFAULT_MODEL})"
    )
    p.add_argument("--checkpoint", help="local file or URL of a state dict to use instead")
    p.add_argument("--batch-size", type=_positive, default=32, help="images per forward (32)")
    p.add_argument("--workers", type=_natural, help="decoding processes (default: auto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="autocast dtype for the forward pass (bfloat16/float16: for GPUs)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _positive(text: str) -> int:
    value = _natural(text)
    if value < 1:
        msg = f"must be at least 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"must be a whole number >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _inputs(items: list[str]) -> tuple[list[str], str | None]:
    """The input paths in order, or the usage error that stops the run."""
    from ..images import expand_paths

    if "-" in items:
        stdin_items = [line.rstrip("\r\n") for line in sys.stdin]
        items = [x for x in items if x != "-"] + [x for x in stdin_items if x.strip()]
    paths = [str(p) for p in expand_paths(items)]
    if not paths:
        where = " ".join(map(repr, items)) or "stdin"
        return [], f"No images found in {where}: give image files, folders or - (paths on stdin)."
    return paths, None


def _run(args: argparse.Namespace, body: Body) -> int:
    """Joins torch.distributed if launched by torchrun, runs ``body``; exit 1 if inputs failed."""
    from ..distributed import init_from_env, shutdown

    check_output(args.output)
    ctx = init_from_env(args.device)
    try:
        # Rank 0 alone reads stdin and walks folders; a usage error there stops every rank.
        paths, error = ctx.broadcast(_inputs(args.paths) if ctx.is_main else ([], None))
        if error is not None:
            raise InvalidInputError(error)
        clf = ctx.once_per_node(lambda: _classifier(args, ctx))
        failed = ctx.total(body(ctx, clf, paths))
    finally:
        shutdown(ctx)
    if failed and ctx.is_main:
        print(f"wsl-images {args.command}: {failed} of {len(paths)} inputs failed", file=sys.stderr)
    return 1 if failed else 0


def _classifier(args: argparse.Namespace, ctx: Context) -> Classifier:
    from ..predict import Classifier

    return Classifier(
        args.model,
        checkpoint_path=args.checkpoint,
        device=ctx.device(args.device),
        batch_size=args.batch_size,
        workers=args.workers,
        autocast=args.dtype,
        progress=not args.no_progress,
    )


def _classify(args: argparse.Namespace) -> int:
    def body(ctx: Context, clf: Classifier, paths: list[str]) -> int:
        outcomes = clf.stream_predictions(paths, top_k=args.top_k, context=ctx)
        if not ctx.is_main:
            return _drain(outcomes)
        failed = 0
        with open_output(args.output) as out:
            writer = ClassifyWriter(out, args.format)
            for o in outcomes:
                writer.write(paths[o.index], o)
                failed += o.error is not None
                out.flush()  # results appear as they come, even through a pipe
        return failed

    return _run(args, body)


def _embed(args: argparse.Namespace) -> int:
    fmt = args.format or ("npy" if str(args.output or "").endswith(".npy") else "jsonl")
    if fmt == "npy" and not str(args.output or "").endswith(".npy"):
        msg = "--format npy needs --output FILE.npy (the index goes to FILE.jsonl beside it)."
        raise InvalidInputError(msg)

    def body(ctx: Context, clf: Classifier, paths: list[str]) -> int:
        import numpy as np

        outcomes = clf.stream_embeddings(paths, context=ctx)
        if not ctx.is_main:
            return _drain(outcomes)
        with ExitStack() as stack:
            matrix = None
            if fmt == "npy":
                index = str(Path(args.output).with_suffix(".jsonl"))
                out = stack.enter_context(open_output(index))
                tmp = stack.enter_context(atomic_file(args.output))
                width = clf.weights.arch.num_features
                matrix = np.lib.format.open_memmap(
                    tmp.path, mode="w+", dtype=np.float32, shape=(len(paths), width)
                )
            else:
                out = stack.enter_context(open_output(args.output))
            writer = EmbeddingWriter(out, matrix)
            failed = sum(_write_all(outcomes, paths, writer))
            if matrix is not None:
                matrix.flush()
            del writer, matrix  # unmap before the rename
        return failed

    return _run(args, body)


def _write_all(outcomes: Iterator[Outcome[Any]], paths: list[str], writer: Any) -> Iterator[int]:
    for o in outcomes:
        writer.write(paths[o.index], o)
        yield o.error is not None


def _drain(outcomes: Iterator[Outcome[Any]]) -> int:
    # Ranks other than 0 yield nothing, but iterating drives their share and the collectives.
    for _ in outcomes:
        pass
    return 0
