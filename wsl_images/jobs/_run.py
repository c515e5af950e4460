"""Classify or embed a dataset into a sharded, resumable folder, on one rank or many.

The steps, on every rank (under torchrun) or in one process:

1. rank 0 checks the folder; the others learn the verdict (one broadcast);
2. every rank loads the model (local rank 0 first, so a download happens once per node);
3. rank 0 hashes the checkpoint, compares with ``run.json``, writes the input listing and
   ``run.json`` and finds the shards still missing (one broadcast: this plan, or the error);
4. each rank takes every ``world_size``-th missing shard, reads those shards' inputs from the
   listing and writes each shard itself: no result ever leaves its rank;
5. one gather of each rank's failed inputs and completed shards, which also waits for every
   rank to finish;
6. rank 0 checks that every shard is there and writes ``_SUCCESS``: a shard a rank reports
   complete is trusted (it renamed the file there), any other is looked up by its path. A
   listing of the folder is not trusted at this point: on NFS a client's listing can lag
   behind renames by other nodes for seconds, and a shard would seem to be missing.

The collectives are those few whatever the number of inputs, and what a rank holds is one
shard's entries (and rows, for embed), whatever the size of the dataset.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..distributed import Context
from ..errors import InvalidInputError, WslImagesError
from ..inference import Classifier, Outcome, iter_inputs
from ..zoo import imagenet_categories
from ._listing import Listing, ListingInfo, write_listing
from ._outdir import (
    DEFAULT_SHARD_SIZE,
    RUN_FILE,
    SUCCESS_FILE,
    RunSpec,
    check_folder,
    clear_run,
    count_errors,
    has_shard,
    missing_shards,
    read_spec,
    write_json,
)
from ._shards import ShardBatches, ShardSink

__all__ = ["DEFAULT_SHARD_SIZE", "ShardJob", "ShardSummary", "run_sharded"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ShardJob:
    """What a sharded run computes (``command``: classify or embed) and where it goes."""

    command: str
    folder: Path
    items: Callable[[], Iterable[str]]  # the inputs as given; called on rank 0 only
    shard_size: int = DEFAULT_SHARD_SIZE
    top_k: int = 5
    checkpoint: str | None = None  # as given to the Classifier, for run.json's sha256
    check_hash: bool = True  # as given to the Classifier: a URL's name may only look hashed
    overwrite: bool = False


@dataclass(frozen=True)
class ShardSummary:
    """A finished sharded run: inputs and failures over all shards; shards this run wrote."""

    inputs: int
    failed: int
    shards: int
    skipped: int  # complete before this run started
    written: int


@dataclass(frozen=True)
class _Plan:
    spec: RunSpec
    missing: list[int]


def run_sharded(
    job: ShardJob, *, build: Callable[[], Classifier], context: Context
) -> ShardSummary:
    """Run ``job`` on this rank (all ranks call it); every shard is in ``job.folder`` after."""
    ctx = context
    _on_main(ctx, lambda: check_folder(job.folder))
    clf = ctx.once_per_node(build)
    plan = _on_main(ctx, lambda: _prepare(job, clf))
    spec = plan.spec
    if ctx.is_main and len(plan.missing) < spec.shards:
        log.info("%d of %d shards already complete", spec.shards - len(plan.missing), spec.shards)
    listing = Listing(job.folder, count=spec.inputs, shard_size=spec.shard_size)
    mine = plan.missing[ctx.rank :: ctx.world_size]
    batches = ShardBatches(
        mine, shard_size=spec.shard_size, count=spec.inputs, batch_size=clf.batch_size
    )
    width = clf.weights.arch.num_features if job.command == "embed" else None
    with ShardSink(job.folder, listing, shard_size=spec.shard_size, width=width) as sink:
        for outcome in _outcomes(job, clf, listing, batches, ctx):
            sink.write(outcome)
    missing = set(plan.missing)
    done = [k for k in range(spec.shards) if k not in missing][ctx.rank :: ctx.world_size]
    reports = ctx.gather_all((sink.failed + count_errors(job.folder, done), sink.published))
    failed = sum(count for count, _ in reports)
    published = {k for _, shards in reports for k in shards}
    if ctx.is_main:
        _finish(job.folder, spec, failed, published)
    return ShardSummary(
        spec.inputs, failed, spec.shards, spec.shards - len(missing), len(published)
    )


def _outcomes(
    job: ShardJob, clf: Classifier, listing: Listing, batches: ShardBatches, ctx: Context
) -> Iterator[Outcome[Any]]:
    if job.command == "embed":
        return clf.stream_embeddings(listing, context=ctx, batches=batches)
    return clf.stream_predictions(listing, top_k=job.top_k, context=ctx, batches=batches)


def _prepare(job: ShardJob, clf: Classifier) -> _Plan:
    """Rank 0: the run's record checked or written, the listing written, the missing shards."""
    dtype = clf.autocast_dtype
    options: dict[str, Any] = {"dtype": "float32" if dtype is None else str(dtype)[6:]}
    options["engine"] = clf.engine  # probabilities differ by ~1e-4 between engines
    if job.command == "classify":
        options["top_k"] = job.top_k
        options.update(_labels(clf))
    spec = RunSpec(
        command=job.command,
        model=clf.weights.name,
        checkpoint_sha256=_checkpoint_sha256(clf.weights.name, job.checkpoint, job.check_hash),
        options=options,
        shard_size=job.shard_size,
    )
    old = None if job.overwrite else read_spec(job.folder)
    if old is not None:
        _refuse(job.folder, old.differences(spec, inputs=False))

    def before_publish(info: ListingInfo) -> None:
        if info.count == 0:
            msg = "No images found in the inputs: give image files, folders, .tar shards, - or "
            raise InvalidInputError(msg + "--files-from FILE.")
        new = spec.with_inputs(info.count, info.fingerprint)
        if old is not None:
            _refuse(job.folder, old.differences(new, inputs=True))
            return
        if job.overwrite and clear_run(job.folder):
            log.info("--overwrite: removed the previous run from %s", job.folder)
        write_json(job.folder / RUN_FILE, asdict(new))

    info = write_listing(
        job.folder,
        iter_inputs(job.items()),
        shard_size=job.shard_size,
        before_publish=before_publish,
    )
    spec = spec.with_inputs(info.count, info.fingerprint)
    return _Plan(spec, missing_shards(job.folder, spec))


def _labels(clf: Classifier) -> dict[str, Any]:
    """What names classify's rows: the head's size and its labels (ImageNet's, or a digest of
    the names given or saved with a fine-tuned checkpoint)."""
    names = "\n".join(clf.categories).encode()
    imagenet = clf.categories == imagenet_categories()
    return {"classes": clf.num_classes, "labels": "imagenet" if imagenet else _digest(names)}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def _refuse(folder: Path, differences: list[str]) -> None:
    if differences:
        msg = (
            f"--output-dir {str(folder)!r} holds a run that differs from this command: "
            f"{'; '.join(differences)}. Run the same command to resume it, choose another "
            "folder, or add --overwrite to start over there."
        )
        raise InvalidInputError(msg)


def _checkpoint_sha256(name: str, checkpoint: str | None, check_hash: bool) -> str:
    """The weights' identity: the cache's recorded sha256 of the verified source (a stat), or
    the hash of a local ``--checkpoint`` file."""
    if checkpoint is None or checkpoint.startswith(("http://", "https://")):
        from ..models import source_sha256

        return source_sha256(checkpoint or name, check_hash=check_hash)
    from ..cache import file_sha256

    return file_sha256(Path(checkpoint).expanduser())


def _finish(folder: Path, spec: RunSpec, failed: int, published: set[int]) -> None:
    """``_SUCCESS``, once every shard is either reported by the rank that published it in this
    run or found at its path (a lookup by name, which NFS revalidates, unlike a listing)."""
    missing = [
        k for k in range(spec.shards) if k not in published and not has_shard(folder, spec, k)
    ]
    if missing:  # every rank wrote its shards before the gather above returned
        msg = f"{len(missing)} shards are missing in {str(folder)!r} (first: {missing[0]})."
        raise WslImagesError(msg + " Run the same command again to write them.")
    summary = {"inputs": spec.inputs, "failed": failed, "shards": spec.shards}
    write_json(folder / SUCCESS_FILE, summary)


def _on_main(ctx: Context, work: Callable[[], T]) -> T:
    """``work()`` on rank 0, its result (or its error, raised) on every rank."""
    if not ctx.active:
        return work()
    result: T | None = None
    error: BaseException | None = None
    if ctx.is_main:
        try:
            result = work()
        except WslImagesError as exc:
            error = exc
        except Exception as exc:
            ctx.broadcast((None, WslImagesError(f"rank 0 failed: {exc!r}")))
            raise
    result, error = ctx.broadcast((result, error))
    if error is not None:
        raise error
    return result  # type: ignore[return-value]
