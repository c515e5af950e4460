"""Batched inference: ImageNet labels (``Classifier.predict``) and pooled features (``embed``).

One forward pass per batch gives both the pooled features and the class scores. Batches come
from :mod:`._pipeline` (DataLoader workers decode while the model runs) and results go
out in input order as soon as their batch is done; under torch.distributed the batches are
sharded across ranks and merged on rank 0 (:mod:`wsl_images.distributed`). The forward pass up
to the pooled features runs on an engine (:mod:`._engines`: torch, or onnxruntime); the head
runs in torch.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from .._util import progress_bar
from ..distributed import Context, resolve_device
from ..errors import ImageDecodeError, InvalidInputError
from ..models import checkpoint_file, load_trained
from ..zoo import autocast_dtype, geometry, imagenet_categories, normalization
from ._arguments import Images, as_batch, labels_for
from ._devdecode import check_decode, decoder_for
from ._engines import Engine, TorchEngine, check_engine
from ._growing import Growing
from ._pipeline import ImageInput, batch_size_for, chunk_for, default_workers, make_batch_loader

__all__ = ["Classifier", "Outcome", "Prediction"]

_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image, most probable first (ImageNet's, or the model's own)."""

    labels: list[str]
    indices: list[int]
    probabilities: list[float]

    def as_dicts(self) -> list[dict[str, object]]:
        return [
            {"label": lab, "index": i, "probability": p}
            for lab, i, p in zip(self.labels, self.indices, self.probabilities, strict=True)
        ]


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """The result for input ``index``: ``value``, or ``error`` saying why there is none."""

    index: int
    value: T | None
    error: str | None = None


class Classifier:
    """A pretrained model with its preprocessing, ready to label or embed images.

    ``checkpoint_path``: a local file or URL loaded instead of the registered weights.
    ``check_hash``: a downloaded file must match the sha256 prefix in its name (torch.hub's
    rule: the part after the last '-'); False for a URL whose name only looks hashed
    (``ckpt-epoch-10.pth``) and whose source you trust.
    ``mmap``: map a local ``checkpoint_path`` file instead of reading it (see ``get_model``:
    then saving that file again in place changes the weights this classifier uses).
    ``device``: None/"auto" (CUDA, else MPS, else CPU), "cpu", "cuda:1", "mps"...
    ``batch_size``: images per forward (None: on a CPU 8, or 32 for the onnxruntime engine; on a
    GPU by the model's GFLOPs, 256 for ResNet-50). ``workers``: DataLoader processes that
    decode (None: 1 per 4 cores for a CPU model, every core but one for a GPU; 0: decode in
    this process). ``autocast``: "bfloat16"/"float16" run the forward under
    ``torch.autocast`` (mixed precision, for GPUs; the weights stay float32; bfloat16 is
    float16 where the device lacks it).
    ``progress``: download and tqdm bars (on a TTY only). ``cache_dir``: where downloaded
    weights are kept (default: the cache's, see the README). ``name`` may be an alias
    (``ig_resnext101_32x8d``, timm's names); ``.name`` is then the model it names.
    ``dtype=`` is the deprecated spelling of ``autocast=``. ``decode``: where JPEG files are
    decoded: "auto" (on CUDA, the GPU decodes a share beside the CPU workers; elsewhere the
    CPU), "cpu" (the workers, with Pillow), "gpu" (every JPEG the GPU can take; CUDA only).

    ``name`` None: the default model, or with ``checkpoint_path`` the architecture its shapes
    show (logged at INFO). ``num_classes``: outputs of the checkpoint's ``fc`` (None: read from
    it; a fine-tuned head of any size works, and ``embed`` ignores the head; a checkpoint
    without ``fc`` can only ``embed``). ``labels``: one name per class; by default the
    checkpoint's ``classes`` entry (as ``examples/finetune.py`` saves it), else ImageNet's names
    for 1000 classes, else the class indices ("0", "1", ...). ``.categories`` holds them.

    Methods take a list of images or one image alone (a path, PIL image or CHW tensor: a batch
    of one, e.g. ``predict("cat.jpg")`` returns a list of one result).
    ``engine``: what runs the forward pass: "torch" (default), or "onnxruntime" (CPU batch
    jobs: 1.25-1.55x on CPUs; float32; the extra ``wsl-images[onnxruntime]``): its ONNX graph is
    exported once per checkpoint, checked, and kept in the cache (docs/inference.md).

    >>> clf = Classifier("resnet50_swsl")
    >>> clf.predict(["cat.jpg"], top_k=3)[0].labels
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        checkpoint_path: str | os.PathLike[str] | None = None,
        check_hash: bool = True,
        mmap: bool = False,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        autocast: str | torch.dtype | None = None,
        progress: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        dtype: str | torch.dtype | None = None,
        num_classes: int | None = None,
        labels: Sequence[str] | None = None,
        decode: str = "auto",
        engine: str = "torch",
    ) -> None:
        if batch_size is not None and batch_size < 1:
            msg = f"batch_size must be at least 1, got {batch_size!r}."
            raise InvalidInputError(msg)
        if workers is not None and workers < 0:
            msg = f"workers must be 0 (decode in this process) or more, got {workers!r}."
            raise InvalidInputError(msg)
        self.device = resolve_device(device)
        check_decode(decode, self.device)  # before the model loads: a usage error, at once
        self.workers = default_workers(self.device) if workers is None else workers
        if dtype is not None:
            warnings.warn(
                "Classifier(dtype=...) is deprecated: it means autocast, so it is now spelled "
                "Classifier(autocast=...); dtype= will be removed in the next release.",
                DeprecationWarning,
                stacklevel=2,
            )
            autocast = dtype if autocast is None else autocast
        self.autocast_dtype = autocast_dtype(_dtype(autocast), self.device)
        self.engine = check_engine(engine, self.device, self.autocast_dtype)  # before the load
        self.progress = progress
        self._load(name, checkpoint_path, check_hash, mmap, cache_dir, num_classes, labels)
        # The model (inferred from a checkpoint, maybe) decides what fills a GPU's batch; the
        # engine, a CPU's.
        self.batch_size = batch_size or batch_size_for(
            self.device, self.weights.meta["gflops"], engine=self.engine
        )
        self.decoder = decoder_for(decode, self.device, self.geometry)
        self.decode = "cpu" if self.decoder is None else self.decoder.mode

    def _load(
        self,
        name: str | None,
        checkpoint_path: str | os.PathLike[str] | None,
        check_hash: bool,
        mmap: bool,
        cache_dir: str | os.PathLike[str] | None,
        num_classes: int | None,
        labels: Sequence[str] | None,
    ) -> None:
        loaded = load_trained(
            name,
            checkpoint_path=checkpoint_path,
            num_classes=num_classes,
            check_hash=check_hash,
            mmap=mmap,
            progress=self.progress,
            cache_dir=cache_dir,
        )
        self.weights = loaded.weights  # the architecture and preprocessing used
        self.name = self.weights.name
        self.num_classes, self.head = loaded.num_classes, loaded.head
        self.categories, origin = labels_for(
            loaded.num_classes, given=labels, saved=loaded.classes, imagenet=imagenet_categories()
        )
        if origin != "ImageNet's classes":
            log.info("%s: %d classes, labelled with %s", self.name, self.num_classes, origin)
        self.geometry = geometry(self.weights.preprocessing)
        self.normalize = normalization(self.weights.preprocessing)
        model = loaded.model.eval()
        runner: Engine | None = None
        if self.engine == "onnxruntime":  # its graph is made from the model on the CPU
            from ._graph import onnxruntime_engine

            source = checkpoint_file(
                self.name,
                checkpoint_path,
                progress=self.progress,
                check_hash=check_hash,
                cache_dir=cache_dir,
            )
            runner = onnxruntime_engine(model, self.weights, source, self.device, cache_dir)
            # Only fc runs in torch: the backbone's weights stay as loaded (mapped, for a file of
            # the cache), not copied into channels_last (0.06 s for ResNet-50, more for larger).
            self.model = model.to(self.device)
        else:
            self.model = model.to(self.device, memory_format=torch.channels_last)
        self._engine = runner or TorchEngine(self.model, self.device, self.autocast_dtype)

    def predict(self, images: Images, top_k: int = 5) -> list[Prediction]:
        """Top-``top_k`` labels, class indices and probabilities for each image, in order
        (``top_k`` above the number of classes gives them all). One image alone: a list of one.

        Raises ``ImageDecodeError`` naming every input that could not be read; use
        :meth:`stream_predictions` to get the other results as well.
        """
        batch = as_batch(images)
        return _collect(self.stream_predictions(batch, top_k=top_k), batch, "stream_predictions")

    def embed(self, images: Images) -> torch.Tensor:
        """Pooled features (the input of ``fc``, float32), one row per image (one image alone:
        one row). Raises ``ImageDecodeError`` as :meth:`predict`."""
        batch = as_batch(images)
        rows = _collect(self.stream_embeddings(batch), batch, "stream_embeddings")
        width = self.weights.arch.num_features
        return torch.stack(rows) if rows else torch.empty(0, width)

    def stream_predictions(
        self,
        images: Images,
        *,
        top_k: int = 5,
        context: Context | None = None,
        batches: Sequence[Sequence[int]] | None = None,
    ) -> Iterator[Outcome[Prediction]]:
        """One :class:`Outcome` of top-``top_k`` predictions per input, in input order, as soon
        as its batch is done. A failed input gives an Outcome with ``error``; the run goes on.
        Under torch.distributed (``context``), each rank processes its share and rank 0 yields
        every outcome. ``batches``: process only these positions of ``images``, cut into these
        batches (at most ``batch_size`` each), in this process, and yield their outcomes in
        that order; no merge across ranks (``context`` only says who shows progress)."""
        if top_k < 1:
            msg = f"top_k must be at least 1, got {top_k!r}."
            raise InvalidInputError(msg)
        if not self.head:
            msg = (
                f"This {self.name} checkpoint has no fc (a backbone saved without its head): it "
                "can embed images, not classify them. Load a checkpoint that includes fc."
            )
            raise InvalidInputError(msg)
        head = self._classify_head(min(top_k, len(self.categories)))
        return self._stream(as_batch(images), head, context or Context(), batches)

    def stream_embeddings(
        self,
        images: Images,
        *,
        context: Context | None = None,
        batches: Sequence[Sequence[int]] | None = None,
    ) -> Iterator[Outcome[torch.Tensor]]:
        """One :class:`Outcome` of pooled features (a float32 row) per input, in input order;
        otherwise as :meth:`stream_predictions`."""
        # Clones: a row view would drag its whole batch along when pickled (gather_object).
        return self._stream(
            as_batch(images),
            lambda feats: [row.clone() for row in feats.float().cpu()],
            context or Context(),
            batches,
        )

    def stream(
        self,
        images: Images,
        *,
        top_k: int | None = 5,
        context: Context | None = None,
    ) -> Iterator[Outcome[Prediction]] | Iterator[Outcome[torch.Tensor]]:
        """Deprecated: :meth:`stream_predictions`; :meth:`stream_embeddings` for ``top_k=None``."""
        warnings.warn(
            "Classifier.stream() is deprecated: use stream_predictions(images, top_k=K) or "
            "stream_embeddings(images); stream() will be removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        if top_k is None:
            return self.stream_embeddings(images, context=context)
        return self.stream_predictions(images, top_k=top_k, context=context)

    def _stream(
        self,
        images: Sequence[ImageInput],
        head: Callable[[torch.Tensor], list[R]],
        ctx: Context,
        batches: Sequence[Sequence[int]] | None,
    ) -> Iterator[Outcome[R]]:
        if batches is not None:
            total = 0
            for batch in batches:
                if len(batch) > self.batch_size:
                    msg = f"batches hold up to {self.batch_size} inputs, one has {len(batch)}."
                    raise InvalidInputError(msg)
                total += len(batch)
            merged = self._run(images, batches, head)
        elif isinstance(images, Growing) and not ctx.active:
            merged, total = self._run(images, _ranges(images, self.batch_size), head), None
        else:
            count = -(-len(images) // self.batch_size)
            size, n = self.batch_size, len(images)
            mine = [range(b * size, min(n, (b + 1) * size)) for b in ctx.batches(count)]
            merged, total = ctx.merge(self._run(images, mine, head), count), n
        with progress_bar(total, show=self.progress and ctx.is_main) as bar:
            for outcomes in merged:
                yield from outcomes
                bar.update(len(outcomes))

    def _classify_head(self, k: int) -> Callable[[torch.Tensor], list[Prediction]]:
        def classify(feats: torch.Tensor) -> list[Prediction]:
            probs = self.model.fc(feats).float().softmax(dim=1)
            values, indices = (t.cpu() for t in probs.topk(k, dim=1))
            return [
                Prediction([self.categories[i] for i in idx], idx, val)
                for val, idx in zip(values.tolist(), indices.tolist(), strict=True)
            ]

        return classify

    def _run(
        self,
        images: Sequence[ImageInput],
        batches: Iterable[Sequence[int]],
        head: Callable[[torch.Tensor], list[R]],
    ) -> Iterator[list[Outcome[R]]]:
        chunk = chunk_for(self.device, self.batch_size)
        loader = make_batch_loader(
            images,
            batches,
            self.geometry,
            workers=_needed(self.workers, images, batches, chunk or self.batch_size),
            pin_memory=self.device.type == "cuda",
            decoder=self.decoder,
            chunk=chunk,
        )
        for batch in loader:
            values = iter(self._forward(batch.images, head) if batch.images is not None else [])
            yield [
                Outcome(i, next(values), None) if err is None else Outcome(i, None, err)
                for i, err in zip(batch.indices, batch.errors, strict=True)
            ]

    @torch.inference_mode()
    def _forward(self, images: torch.Tensor, head: Callable[[torch.Tensor], list[R]]) -> list[R]:
        return head(self.batch_features(images))

    @torch.inference_mode()
    def batch_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (float32, on the model's device) of a batch as the pipeline's workers
        make it: cropped NCHW images, uint8 (0-255) or float (0-1), not yet normalised. The
        forward runs on the engine (under ``autocast`` if set); apply ``self.model.fc`` for
        logits."""
        x = images.to(self.device, non_blocking=True)
        return self._engine.features(self.normalize(x))


def _ranges(images: Growing[ImageInput], size: int) -> Iterator[range]:
    """Consecutive batches of ``size`` over inputs still being listed."""
    start = 0
    while images.has(start):
        images.has(start + size - 1)
        yield range(start, min(start + size, images.known))
        start += size


def _needed(
    workers: int, images: Sequence[ImageInput], batches: Iterable[Sequence[int]], chunk: int
) -> int:
    """No more workers than there are chunks to decode (a few images need no 15 processes)."""
    if isinstance(images, Growing) and not isinstance(batches, Sequence):
        images.has(workers * chunk - 1)  # lists that far at most
        return min(workers, -(-images.known // chunk))
    if isinstance(batches, Sequence):
        return min(workers, sum(-(-len(b) // chunk) for b in batches[: workers + 1]))
    return workers


def _collect(outcomes: Iterator[Outcome[T]], images: Sequence[ImageInput], stream: str) -> list[T]:
    done = list(outcomes)
    failed = [o for o in done if o.value is None]
    if failed:
        lines = "; ".join(f"{_describe(images[o.index], o.index)}: {o.error}" for o in failed[:5])
        msg = (
            f"{len(failed)} of {len(done)} images could not be used ({lines}). "
            f"Fix or drop them, or use Classifier.{stream}() to get the other results "
            "(one outcome per image, with its error or its value)."
        )
        raise ImageDecodeError(msg)
    return [o.value for o in done if o.value is not None]


def _describe(image: ImageInput, index: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return repr(os.fspath(image))
    return f"image {index} ({type(image).__name__})"


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return None if dtype == torch.float32 else dtype
    if dtype not in _DTYPES:
        msg = f"Unknown autocast dtype {dtype!r}: use one of {', '.join(sorted(_DTYPES))}."
        raise InvalidInputError(msg)
    return _DTYPES[dtype]
