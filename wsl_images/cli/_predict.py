"""``classify`` and ``embed``: label images, or write their pooled features.

Both run on :class:`wsl_images.Classifier`'s pipeline; under ``torchrun`` every rank runs the
same command on its share of the batches and rank 0 writes the merged output (``--output``),
or each rank writes its own shards of a resumable folder (``--output-dir``, :mod:`..bulk`).
torch, numpy and PIL are imported by the handlers, not here, so building the parser stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util import atomic_file
from ..errors import InvalidInputError
from ..jobs import DEFAULT_SHARD_SIZE  # torch-free
from ..zoo import DEFAULT_MODEL
from ._evaluate import ENGINES
from ._output import ClassifyWriter, EmbeddingWriter, check_output, format_from, open_output

if TYPE_CHECKING:
    from ..distributed import Context
    from ..inference import Classifier, Entry, Outcome

    Body = Callable[[Context, Classifier, Sequence[Entry], Sequence[str]], int]

__all__ = ["register"]

# Formats an --output file's extension names; any other extension keeps the default.
_CLASSIFY_SUFFIXES = {".jsonl": "jsonl", ".csv": "csv"}
_EMBED_SUFFIXES = {".npy": "npy", ".jsonl": "jsonl"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("classify", help="label images with ImageNet classes")
    _common(p)
    p.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    p.add_argument(
        "--format",
        choices=("table", "jsonl", "csv"),
        help="default: from --output's extension (.jsonl, .csv), else table (jsonl in "
        "--output-dir)",
    )
    p.add_argument("--output", "-o", help="write here (atomically) instead of stdout")
    p.add_argument(
        "--labels",
        metavar="FILE",
        help="class names, one a line, in the order of the model's outputs (default: the "
        "checkpoint's 'classes', ImageNet's for 1000 classes, else class indices)",
    )
    _sharding(p)
    p.set_defaults(func=_classify, late="paths")

    p = sub.add_parser("embed", help="pooled features (2048-d, 512-d for ResNet-18)")
    _common(p)
    p.add_argument(
        "--format",
        choices=("npy", "jsonl"),
        help="npy: FILE.npy matrix (row i = input i, NaN rows for failed inputs) + FILE.jsonl "
        "index; jsonl: one line per input with its embedding (default: from --output's "
        "extension, .npy or .jsonl, else jsonl)",
    )
    p.add_argument("--output", "-o", help="write here (atomically) instead of stdout")
    _sharding(p)
    p.set_defaults(func=_embed, late="paths")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths", nargs="*", metavar="PATH", help="image files, folders, .tar shards, - (stdin)"
    )
    p.add_argument("--files-from", metavar="FILE", help="more inputs, one path per line")
    p.add_argument(
        "--model",
        help=f"model name or alias (default {DEFAULT_MODEL}; with --checkpoint: the architecture "
        "its shapes show)",
    )
    p.add_argument("--checkpoint", help="local file or URL of a state dict to use instead")
    p.add_argument(
        "--no-check-hash",
        dest="check_hash",
        action="store_false",
        help="use a --checkpoint URL whose name only looks hashed (ckpt-epoch-10.pth: the part "
        "after the last '-' is not the start of its sha256); only for a source you trust",
    )
    p.add_argument(
        "--batch-size",
        type=_positive,
        help=(
            "images per forward (default: on a CPU 8, or 32 with --engine onnxruntime; on a GPU "
            "by model size, 256 for ResNet-50)"
        ),
    )
    p.add_argument("--workers", type=_natural, help="decoding processes (default: auto)")
    p.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda:N, mps")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="autocast dtype for the forward pass (bfloat16/float16: for GPUs)",
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
        "--num-classes",
        type=_positive,
        metavar="N",
        help="outputs of --checkpoint's fc (default: read from it; a fine-tuned head)",
    )
    p.add_argument(
        "--decode",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="where JPEGs are decoded: auto (on CUDA, the GPU decodes a share beside the CPU "
        "workers), cpu (Pillow in the workers), gpu (nvJPEG; needs CUDA) (default auto)",
    )


def _sharding(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output-dir",
        metavar="DIR",
        help="sharded, resumable output: DIR/shard-KKKKKK.jsonl (+ .npy for embed), run.json",
    )
    p.add_argument(
        "--shard-size",
        type=_positive,
        metavar="N",
        help=f"inputs per shard with --output-dir (default {DEFAULT_SHARD_SIZE})",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="--output-dir: start over instead of resuming"
    )


def _check_args(args: argparse.Namespace) -> None:
    """Usage errors found in the arguments alone, before any work."""
    if not args.paths and args.files_from is None:
        msg = "No inputs: give image files, folders, .tar shards, - (stdin) or --files-from FILE."
        raise InvalidInputError(msg)
    if args.files_from is not None and not os.path.isfile(args.files_from):
        msg = f"--files-from {args.files_from!r} is not a file: give a file of paths, one a line."
        raise InvalidInputError(msg)
    if args.output_dir is None:
        for flag, given in (("--shard-size", args.shard_size), ("--overwrite", args.overwrite)):
            if given:
                msg = f"{flag} applies to --output-dir DIR only: add --output-dir or drop {flag}."
                raise InvalidInputError(msg)
        check_output(args.output)
        if args.command == "embed" and _embed_format(args) == "npy":
            index = _index_file(args.output)
            if Path(index).is_dir():
                msg = f"--output {args.output!r}: its index {index!r} would replace a folder."
                raise InvalidInputError(msg + " Name the output otherwise.")
        _read_labels(args)
        return
    if args.output is not None:
        msg = "--output and --output-dir exclude each other: choose one file or one folder."
        raise InvalidInputError(msg)
    if args.format not in (None, "jsonl"):
        msg = f"--format {args.format}: --output-dir always writes jsonl shards; drop --format."
        raise InvalidInputError(msg)
    _read_labels(args)


def _read_labels(args: argparse.Namespace) -> None:
    """--labels FILE read into ``args.label_names`` (one label a line; blank lines skipped)."""
    path = getattr(args, "labels", None)
    args.label_names = None
    if path is None:
        return
    try:
        with open(path, encoding="utf-8") as f:
            args.label_names = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"--labels {path!r} cannot be read ({exc}): give a text file, one label a line."
        raise InvalidInputError(msg) from exc
    if not args.label_names:
        msg = f"--labels {path!r} holds no labels: give one label a line."
        raise InvalidInputError(msg)


def _embed_format(args: argparse.Namespace) -> str:
    return args.format or format_from(args.output, _EMBED_SUFFIXES, None) or "jsonl"


def _index_file(output: str) -> str:
    """The jsonl index written beside an embed --output FILE.npy."""
    return str(Path(output).with_suffix(".jsonl"))


def _items(args: argparse.Namespace) -> Iterator[str]:
    """The inputs as given: arguments (``-``: the lines of stdin), then --files-from lines."""
    from ..inference import read_lines

    for item in args.paths:
        if item == "-":
            yield from read_lines(sys.stdin)
        else:
            yield item
    if args.files_from is not None:
        with open(args.files_from, encoding="utf-8") as lines:
            yield from read_lines(lines)


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


def _inputs(args: argparse.Namespace, *, lazy: bool = False) -> tuple[Sequence[Entry], str | None]:
    """The inputs in order (``lazy``: listed as far as they are asked for), or the usage error
    that stops the run."""
    from ..inference import Growing, iter_inputs

    entries = Growing(iter_inputs(_items(args)))
    if not entries.has(0):
        where = " ".join(map(repr, args.paths)) or "stdin"
        if args.files_from is not None:
            where += f" and --files-from {args.files_from!r}"
        return [], f"No images found in {where}: give image files, folders or - (paths on stdin)."
    return (entries if lazy else list(entries)), None


def _run(args: argparse.Namespace, body: Body) -> int:
    """Joins torch.distributed if launched by torchrun, runs ``body``; exit 1 if inputs failed."""
    _check_args(args)
    if args.output_dir is not None:
        return _run_sharded(args)
    from ..distributed import init_from_env, leaving
    from ..inference import Mapped, entry_path

    ctx = init_from_env(args.device)
    with leaving(ctx):
        # Rank 0 alone reads stdin and walks folders; a usage error there stops every rank.
        # One process lists the inputs as the run goes (the first batch need not wait for all).
        entries, error = _inputs(args, lazy=True) if not ctx.active else ([], None)
        if ctx.active:
            entries, error = ctx.broadcast(_inputs(args) if ctx.is_main else ([], None))
        if error is not None:
            raise InvalidInputError(error)
        paths = Mapped(entries, entry_path)
        clf = ctx.once_per_node(lambda: _classifier(args, ctx))
        failed = ctx.total(body(ctx, clf, entries, paths))
    if failed and ctx.is_main:
        print(f"wsl-images {args.command}: {failed} of {len(paths)} inputs failed", file=sys.stderr)
    return ctx.exit_status(failed=failed > 0)


def _run_sharded(args: argparse.Namespace) -> int:
    """--output-dir: each rank writes its own shards; a rerun resumes (wsl_images.jobs)."""
    from ..distributed import init_from_env, leaving
    from ..jobs import ShardJob, run_sharded

    job = ShardJob(
        command=args.command,
        folder=Path(args.output_dir),
        items=lambda: _items(args),
        shard_size=args.shard_size or DEFAULT_SHARD_SIZE,
        top_k=getattr(args, "top_k", 5),
        checkpoint=args.checkpoint,
        check_hash=args.check_hash,
        overwrite=args.overwrite,
    )
    ctx = init_from_env(args.device)
    with leaving(ctx):
        summary = run_sharded(job, build=lambda: _classifier(args, ctx), context=ctx)
    if ctx.is_main:
        if summary.skipped:
            done = f"{summary.skipped} of {summary.shards} shards were complete already"
            print(f"wsl-images {args.command}: resumed: {done}", file=sys.stderr)
        if summary.failed:
            failed = f"{summary.failed} of {summary.inputs} inputs failed"
            print(f"wsl-images {args.command}: {failed}", file=sys.stderr)
    return ctx.exit_status(failed=summary.failed > 0)


def _classifier(args: argparse.Namespace, ctx: Context) -> Classifier:
    from ..inference import Classifier

    return Classifier(
        args.model,
        checkpoint_path=args.checkpoint,
        check_hash=args.check_hash,
        device=ctx.device(args.device),
        batch_size=args.batch_size,
        workers=args.workers,
        autocast=args.dtype,
        progress=not args.no_progress,
        engine=args.engine,
        num_classes=args.num_classes,
        labels=getattr(args, "label_names", None),
        decode=args.decode,
    )


def _classify(args: argparse.Namespace) -> int:
    fmt: str = args.format or format_from(args.output, _CLASSIFY_SUFFIXES, "table") or "table"

    def body(ctx: Context, clf: Classifier, entries: Sequence[Entry], paths: Sequence[str]) -> int:
        outcomes = clf.stream_predictions(entries, top_k=args.top_k, context=ctx)
        if not ctx.is_main:
            return _drain(outcomes)
        failed = 0
        with open_output(args.output) as out:
            writer = ClassifyWriter(out, fmt)
            for o in outcomes:
                writer.write(paths[o.index], o)
                failed += o.error is not None
                out.flush()  # results appear as they come, even through a pipe
        return failed

    return _run(args, body)


def _embed(args: argparse.Namespace) -> int:
    fmt = _embed_format(args)
    npy = format_from(args.output, _EMBED_SUFFIXES, None) == "npy"
    if fmt == "npy" and args.output_dir is None and not npy:
        msg = "--format npy needs --output FILE.npy (the index goes to FILE.jsonl beside it)."
        raise InvalidInputError(msg)

    def body(ctx: Context, clf: Classifier, entries: Sequence[Entry], paths: Sequence[str]) -> int:
        import numpy as np

        outcomes = clf.stream_embeddings(entries, context=ctx)
        if not ctx.is_main:
            return _drain(outcomes)
        with ExitStack() as stack:
            matrix = None
            if fmt == "npy":
                out = stack.enter_context(open_output(_index_file(args.output)))
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


def _write_all(
    outcomes: Iterator[Outcome[Any]], paths: Sequence[str], writer: Any
) -> Iterator[int]:
    for o in outcomes:
        writer.write(paths[o.index], o)
        yield o.error is not None


def _drain(outcomes: Iterator[Outcome[Any]]) -> int:
    # Ranks other than 0 yield nothing, but iterating drives their share and the collectives.
    for _ in outcomes:
        pass
    return 0
