"""Top-1/top-5 accuracy of a model on an ImageNet-style folder, as published evaluations measure it.

Same pipeline as classify (``inference._pipeline``: DataLoader workers decode while the model
runs, batches, device, autocast), with two differences that published numbers need: JPEGs are
decoded in full (no draft shortcut), and when the folder holds a subset of the 1000 classes
(ImageNet-R/A) the top-k runs over those classes' logits only, as the sets' authors evaluate them.
Unreadable images are counted and listed, never dropped or scored as wrong. Under torch.distributed
each rank scores its share of the batches; the counts are summed once at the end.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .._util import progress_bar
from ..distributed import Context, resolve_device
from ..errors import ImageDecodeError, InvalidInputError
from ..inference import (
    Batch,
    Classifier,
    DeviceDecoder,
    batch_size_for,
    chunk_for,
    decoder_for,
    make_loader,
)
from ..zoo import geometry, get_weights, robustness
from ._datasets import EvalSet, imagenet_wnids, sample, scan

__all__ = ["ClassScore", "EvalResult", "Failure", "default_batch_size", "evaluate"]

_LAYOUT_TEXT = {"wordnet": "WordNet-id folders", "index": "class-index folders"}


@dataclass(frozen=True)
class ClassScore:
    """Accuracy on one class (percent of its images); None for a class without images."""

    index: int  # model output
    wnid: str
    label: str  # ImageNet category name
    count: int
    top1: float | None
    top5: float | None


@dataclass(frozen=True)
class Failure:
    """An image that could not be read: it is in ``failed``, not in ``count``."""

    path: str
    error: str


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate` measured. Accuracies are percentages of the ``count`` images read."""

    model: str
    data: str
    layout: str  # "wordnet" (n01440764/ ...) or "index" (0/ ... 999/)
    top1: float
    top5: float
    count: int  # images scored
    failed: int  # images that could not be read (listed in ``failures``)
    per_class: list[ClassScore]  # every class folder, in model output order
    classes_used: list[int]  # model outputs the top-k ran over: all 1000, or the classes present
    seconds: float  # wall time of the whole call: scan, model load, evaluation
    failures: list[Failure]
    skipped: int  # files in class folders that are not images by extension (not counted)
    limit: int | None
    checkpoint: str | None
    dtype: str
    device: str
    engine: str = "torch"  # what ran the forward pass: "torch" or "onnxruntime"
    decode: str = "cpu"  # who decoded the JPEGs: "cpu" (Pillow), "gpu" (nvJPEG) or "hybrid"
    device_decoded: int = 0  # images the device decoded (the rest: Pillow, on the CPU)

    @property
    def restricted(self) -> bool:
        """True when the logits were restricted to a subset of the 1000 classes."""
        return len(self.classes_used) < len(imagenet_wnids())

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``--output FILE.json``)."""
        return {**asdict(self), "restricted": self.restricted}

    def summary(self) -> str:
        """What ``wsl-images evaluate`` prints: the numbers, then the reference numbers to
        compare them with, one per line (no trailing newline)."""
        w = get_weights(self.model)
        classes = f"{len(self.classes_used)} classes" + (
            ", logits restricted to them" if self.restricted else ""
        )
        lines = [
            f"{self.model} on {self.data} ({_LAYOUT_TEXT[self.layout]}, {classes})",
            f"top-1 {self.top1:.3f}%  top-5 {self.top5:.3f}%  on {self.count} images",
            f"unreadable: {self.failed}; non-image files skipped: {self.skipped}; "
            f"{self.seconds:.1f} s ({self.dtype}, {self.device}, engine {self.engine})",
            f"decoding: {self._decoding()}",
            f"reference, ImageNet-1k val: {w.top1:.1f}/{w.top5:.1f} published, "
            f"{w.top1_remeasured:.3f}/{w.top5_remeasured:.3f} re-measured (timm)",
            f"reference, timm: {robustness(w.name).describe()}",
        ]
        if self.limit is not None:
            lines.insert(2, f"sample: at most {self.limit} images, spread across classes")
        if self.checkpoint is not None:
            lines.insert(1, f"checkpoint: {self.checkpoint} (references: the released file)")
        return "\n".join(lines)

    def _decoding(self) -> str:
        if self.decode == "cpu":
            return "Pillow, full decode, in the CPU workers"
        total = self.count + self.failed
        return (
            f"{self.decode}: nvJPEG on {self.device} for {self.device_decoded} of {total} "
            "images, Pillow (full decode) for the rest"
        )


def evaluate(
    name: str,
    data: str | os.PathLike[str],
    *,
    checkpoint_path: str | os.PathLike[str] | None = None,
    check_hash: bool = True,
    mmap: bool = False,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    limit: int | None = None,
    progress: bool = True,
    context: Context | None = None,
    engine: str = "torch",
    decode: str = "cpu",
) -> EvalResult:
    """Top-1/top-5 of model ``name`` on the labelled folder ``data``.

    ``data``: one folder per class, named by WordNet id (ImageNet val, -Sketch, -R, -A) or by
    class index 0-999 (ImageNet-V2). ``checkpoint_path``: a local file or URL evaluated instead
    of the released weights. ``check_hash``: False loads a URL whose name only looks hashed
    (see :class:`Classifier`). ``batch_size``: None is :func:`default_batch_size`. ``dtype``:
    "bfloat16"/"float16" run the forward under autocast (GPUs); None/"float32" is full
    precision. ``limit``: at most that many images, spread across classes (a quick check).
    ``context``: under torchrun, ``wsl_images.distributed.init_from_env()`` (each rank scores a
    share; every rank gets the result). Raises ``InvalidInputError`` for an unknown layout,
    ``ImageDecodeError`` if no image could be read.
    ``mmap``: map a local ``checkpoint_path`` file instead of reading it (see ``get_model``).
    ``engine``: "torch" (default) or "onnxruntime" (CPUs: faster; see :class:`Classifier`).
    ``decode``: "cpu" (default: Pillow decodes every image in full, as published evaluations
    do), "auto" (on CUDA the GPU decodes a share of the JPEGs beside the CPU workers) or "gpu"
    (nvJPEG for every JPEG it can take; CUDA only); the result says which decoded what.
    """
    start = time.perf_counter()
    weights = get_weights(name)  # an unknown name fails before a long folder scan
    ctx = context or Context()
    where = ctx.device(None if device is None else str(device)) if ctx.active else device
    where = resolve_device(where)
    # So does decode="gpu" without CUDA (a usage error).
    decoder = decoder_for(decode, where, geometry(weights.preprocessing), draft=False)
    evalset = _scan(ctx, data, limit)
    clf = ctx.once_per_node(
        lambda: Classifier(
            name,
            checkpoint_path=checkpoint_path,
            check_hash=check_hash,
            mmap=mmap,
            device=where,
            batch_size=batch_size,  # None: classify's default, as default_batch_size says
            workers=workers,
            autocast=dtype,
            progress=progress,
            engine=engine,
            decode="cpu",  # the decoder above, which decodes in full
        )
    )
    _check_head(clf, checkpoint_path)
    tally = _run(clf, evalset, ctx, progress, decoder)
    totals, failures = _reduce(ctx, tally)
    decoded = ctx.total(0 if decoder is None else decoder.stats.device)  # every rank calls it
    result = _result(clf, evalset, totals, failures, start, limit, checkpoint_path)
    if decoder is None:
        return result
    return dataclasses.replace(result, decode=decoder.mode, device_decoded=decoded)


def _check_head(clf: Classifier, checkpoint: str | os.PathLike[str] | None) -> None:
    """ImageNet accuracy needs ImageNet's 1000-class head (a fine-tuned one has other classes)."""
    if clf.head and clf.num_classes == len(imagenet_wnids()):
        return
    what = f"an fc of {clf.num_classes} outputs" if clf.head else "no fc (a backbone)"
    msg = (
        f"Checkpoint {os.fspath(checkpoint or clf.name)!r} has {what}: evaluate measures "
        f"accuracy over the {len(imagenet_wnids())} ImageNet classes and needs a checkpoint "
        "with ImageNet's head (use classify to run a fine-tuned one)."
    )
    raise InvalidInputError(msg)


def default_batch_size(
    device: torch.device, name: str | None = None, *, engine: str = "torch"
) -> int:
    """Classify's default (:class:`~wsl_images.inference.Classifier`): on a CPU 8 images per
    forward for the torch engine and 32 for onnxruntime; on a GPU by model ``name``'s GFLOPs
    (256 for ResNet-50, fewer for bigger models; 64 when no model is named)."""
    if name is None and device.type != "cpu":
        return 64
    gflops = 0.0 if name is None else get_weights(name).meta["gflops"]
    return batch_size_for(device, gflops, engine=engine)


def _scan(ctx: Context, data: str | os.PathLike[str], limit: int | None) -> EvalSet:
    """Rank 0 walks the folder and shares the set; a bad layout stops every rank."""
    found: EvalSet | str | None = None
    if ctx.is_main:
        try:
            found = sample(scan(data), limit)
        except InvalidInputError as exc:
            found = str(exc)
    found = ctx.broadcast(found)
    if not isinstance(found, EvalSet):
        raise InvalidInputError(str(found))
    return found


class _Tally:
    """Per-class counts of this rank's images, and its unreadable files."""

    def __init__(self, classes: list[int]) -> None:
        self.counts = torch.zeros(3, len(imagenet_wnids()), dtype=torch.int64)  # seen, top1, top5
        self.used = torch.tensor(classes)
        self.restricted = len(classes) < self.counts.shape[1]
        self.failures: list[tuple[int, str]] = []

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        scores = logits[:, self.used] if self.restricted else logits
        top = scores.topk(min(5, scores.shape[1]), dim=1).indices
        top = self.used[top] if self.restricted else top
        hits = top == labels[:, None]
        self.counts[0].index_add_(0, labels, torch.ones_like(labels))
        self.counts[1].index_add_(0, labels, hits[:, 0].long())
        self.counts[2].index_add_(0, labels, hits.any(dim=1).long())

    def top1(self) -> float:
        seen, top1 = int(self.counts[0].sum()), int(self.counts[1].sum())
        return 100 * top1 / seen if seen else 0.0


def _run(
    clf: Classifier, evalset: EvalSet, ctx: Context, progress: bool, decoder: DeviceDecoder | None
) -> _Tally:
    """Score this rank's batches (global batch b goes to rank b mod world size)."""
    n, size = len(evalset.files), clf.batch_size
    order = [i for b in ctx.batches(-(-n // size)) for i in range(b * size, min(n, (b + 1) * size))]
    loader = make_loader(
        evalset.files,
        order,
        clf.geometry,
        batch_size=size,
        workers=min(clf.workers, len(order)),
        pin_memory=clf.device.type == "cuda",
        draft=False,  # published numbers decode JPEGs in full
        decoder=decoder,
        chunk=chunk_for(clf.device, size),
    )
    tally = _Tally(list(evalset.classes))
    labels = torch.tensor(evalset.labels)
    with progress_bar(len(order), show=progress and ctx.is_main) as bar:
        for batch in loader:
            _score(clf, batch, labels, tally)
            bar.update(len(batch.indices))
            bar.set_postfix(top1=f"{tally.top1():.2f}%")
    return tally


def _score(clf: Classifier, batch: Batch, labels: torch.Tensor, tally: _Tally) -> None:
    good = [i for i, err in zip(batch.indices, batch.errors, strict=True) if err is None]
    tally.failures += [
        (i, err) for i, err in zip(batch.indices, batch.errors, strict=True) if err is not None
    ]
    if batch.images is not None:
        tally.add(_logits(clf, batch.images).cpu(), labels[good])


@torch.inference_mode()
def _logits(clf: Classifier, images: torch.Tensor) -> torch.Tensor:
    # The head in float32 on the pooled features, as classify computes its probabilities.
    logits: torch.Tensor = clf.model.fc(clf.batch_features(images))
    return logits.float()


def _reduce(ctx: Context, tally: _Tally) -> tuple[torch.Tensor, list[tuple[int, str]]]:
    """Every rank's counts summed and unreadable files gathered, on every rank (over gloo, CPU
    tensors: whatever the caller's process group, NCCL alone included)."""
    parts = ctx.gather_all(tally.failures)
    return ctx.sum(tally.counts), sorted(f for part in parts for f in part)


def _result(
    clf: Classifier,
    evalset: EvalSet,
    totals: torch.Tensor,
    failures: list[tuple[int, str]],
    start: float,
    limit: int | None,
    checkpoint: str | os.PathLike[str] | None,
) -> EvalResult:
    seen, top1, top5 = (int(row.sum()) for row in totals)
    listed = [Failure(str(evalset.files[i]), err) for i, err in failures]
    if seen == 0:
        shown = "; ".join(f"{f.path}: {f.error}" for f in listed[:5])
        msg = f"None of the {len(listed)} images could be read ({shown}). Check the data folder."
        raise ImageDecodeError(msg)
    wnids = imagenet_wnids()
    per_class = [
        ClassScore(c, wnids[c], clf.categories[c], *_rates(totals[:, c])) for c in evalset.classes
    ]
    return EvalResult(
        model=clf.weights.name,
        data=str(evalset.root),
        layout=evalset.layout,
        top1=100 * top1 / seen,
        top5=100 * top5 / seen,
        count=seen,
        failed=len(listed),
        per_class=per_class,
        classes_used=list(evalset.classes),
        seconds=time.perf_counter() - start,
        failures=listed,
        skipped=evalset.skipped,
        limit=limit,
        checkpoint=None if checkpoint is None else str(checkpoint),
        dtype=str(clf.autocast_dtype or torch.float32).replace("torch.", ""),
        device=str(clf.device),
        engine=clf.engine,
    )


def _rates(column: torch.Tensor) -> tuple[int, float | None, float | None]:
    seen, top1, top5 = (int(v) for v in column)
    if seen == 0:
        return 0, None, None
    return seen, 100 * top1 / seen, 100 * top5 / seen
