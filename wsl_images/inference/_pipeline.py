"""The input side of batched inference: decode and crop in DataLoader workers, in input order.

The main process hands the workers tickets: an input's position, the input itself (a path, a
member of a tar shard, a PIL image or a CHW tensor) and where its JPEG is decoded. So the
workers hold no list of inputs, and inputs still being listed can be processed as they come.
A worker turns each input into a crop (:mod:`._crops`), still uint8 for decoded files, so that
4x fewer bytes cross process boundaries and the host-to-device copy; or, for the device path,
into the file's JPEG bytes, which :mod:`._devdecode` decodes and crops on the model's device in
the main process, in a thread of its own beside the model. The float conversion and ImageNet
normalisation run on the model's device, on whole batches. A bad input never raises out of a
worker: it becomes an error string carried with its batch.

A caller's batch may be cut into smaller chunks for the workers (``chunk``): a GPU batch of 256
is then decoded by 8 workers at once instead of one, so the first batch comes 8x sooner and the
workers stay evenly loaded. The chunks are joined again before the batch is yielded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset

from ._batch import Batch
from ._crops import Encoded, ImageInput, Transform, attempt, for_device
from ._devdecode import DeviceDecoder
from ._finish import finish_batches
from ._start import worker_context
from ._tars import TarMember

__all__ = [
    "Batch",
    "ImageInput",
    "batch_size_for",
    "chunk_for",
    "default_workers",
    "make_batch_loader",
    "make_loader",
    "usable_cores",
]

_CHUNK = 32
_JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
# position, input, to the device?, the caller's batch number, last chunk of that batch?
Ticket = tuple[int, object, bool, int, bool]
Sample = tuple[int, "torch.Tensor | None", "str | None", "Encoded | None", int, bool]


class _Work(Dataset[Sample]):
    """What a worker does with one ticket (the dataset is indexed by tickets, not numbers)."""

    def __init__(self, geometry: Transform, draft: bool):
        self.geometry, self.draft = geometry, draft

    def __len__(self) -> int:  # pragma: no cover - a batch_sampler drives it
        return 0

    def __getitem__(self, ticket: Any) -> Sample:
        index, item, to_device, group, last = cast("Ticket", ticket)
        if index < 0:  # an empty batch: nothing to do, its place in the order is kept
            return index, None, None, None, group, last
        if to_device:
            crop, error, encoded = for_device(item, self.geometry, draft=self.draft)
            return index, crop, error, encoded, group, last
        return index, *attempt(item, self.geometry, draft=self.draft), None, group, last


def _collate(samples: list[Sample]) -> Batch:
    group, last = samples[0][4], any(s[5] for s in samples)
    samples = [s for s in samples if s[0] >= 0]
    good = [t for _, t, _, _, _, _ in samples if t is not None]
    if good and any(t.dtype != torch.uint8 for t in good):
        good = [t.float() / 255 if t.dtype == torch.uint8 else t.float() for t in good]
    spans, blobs, start = [], [], 0
    for pos, (_, _, _, encoded, _, _) in enumerate(samples):
        if encoded is not None:
            data, orientation = encoded
            spans.append((pos, start, len(data), orientation))
            blobs.append(data)
            start += len(data)
    return Batch(
        indices=[s[0] for s in samples],
        images=torch.stack(good) if good else None,
        errors=[s[2] for s in samples],
        # One tensor per chunk: it crosses from the worker in one piece of shared memory.
        encoded=torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8) if blobs else None,
        spans=spans,
        group=group,
        last=last,
    )


class _Schedule:
    """The chunks of ``batches`` as tickets, routed when the DataLoader asks for them."""

    def __init__(
        self,
        items: Sequence[ImageInput],
        batches: Iterable[Sequence[int]],
        chunk: int | None,
        decoder: DeviceDecoder | None,
    ) -> None:
        self.items, self.batches, self.chunk, self.decoder = items, batches, chunk, decoder

    def __iter__(self) -> Iterator[list[Ticket]]:
        for group, positions in enumerate(self.batches):
            positions = list(positions)
            if not positions:
                yield [(-1, None, False, group, True)]
                continue
            size = self.chunk or len(positions)
            for start in range(0, len(positions), size):
                last = start + size >= len(positions)
                yield [
                    (i, item, self._to_device(item), group, last)
                    for i in positions[start : start + size]
                    for item in (self.items[i],)
                ]

    def _to_device(self, item: object) -> bool:
        if self.decoder is None:
            return False
        if isinstance(item, TarMember):
            name = item.name
        elif isinstance(item, (str, os.PathLike)):
            name = os.fspath(item)
        else:
            return False
        return name.lower().endswith(_JPEG_SUFFIXES) and self.decoder.share.take()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform tells)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def default_workers(device: torch.device) -> int:
    """Decoding processes: one per spare core for a CPU model; for a GPU, every core but one
    (the main process drives the GPU), shared among the ranks of a torchrun node."""
    cores = usable_cores()
    if device.type == "cpu":
        # The model's threads use the cores; one worker decoding alongside them costs the model
        # little (decoding is ~5% of a ResNet-50 forward) and hides all of the decode time.
        return max(1, min(4, cores // 4))
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, ranks) - 1)


def batch_size_for(device: torch.device, gflops: float, *, engine: str = "torch") -> int:
    """Images per forward. On a CPU, 8 for the torch engine and 32 for onnxruntime: at 8 a
    ResNet-50's largest activations (26 MB) stay in the processor's cache, and torch ran
    1.25-1.4x faster than at 32 (103 MB, spilling to memory) on the two development CPUs,
    1.15-1.2x end to end; onnxruntime's blocked kernels run at one rate at any batch, and fewer
    calls gain a little. On a GPU, enough work per batch to reach the model's rate: 1024
    GFLOPs' worth, a power of two from 32 to 256 (256 for ResNet-50's 4 GFLOPs, 64 for
    ResNeXt-101 32x8d's 16, 32 from 32x16d up), whatever the engine."""
    if device.type == "cpu":
        return 32 if engine == "onnxruntime" else 8
    size = 256
    while size > 32 and size * gflops > 1024:
        size //= 2
    return size


def chunk_for(device: torch.device, batch_size: int) -> int | None:
    """Inputs per worker task: a whole batch on a CPU (one worker there); at most 32 on a GPU,
    so that the workers decode one big batch together."""
    return None if device.type == "cpu" else min(batch_size, _CHUNK)


def make_loader(
    items: Sequence[ImageInput],
    order: Sequence[int],
    geometry: Transform,
    *,
    batch_size: int,
    workers: int,
    pin_memory: bool,
    draft: bool = True,
    decoder: DeviceDecoder | None = None,
    chunk: int | None = None,
) -> Iterable[Batch]:
    """Batches of ``items[order[...]]``, consecutive and in order, decoded by ``workers``.

    ``draft=False`` decodes JPEGs in full (evaluation); classify/embed keep the fast draft decode.
    """
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    return make_batch_loader(
        items,
        batches,
        geometry,
        workers=workers,
        pin_memory=pin_memory,
        draft=draft,
        decoder=decoder,
        chunk=chunk,
    )


def make_batch_loader(
    items: Sequence[ImageInput],
    batches: Iterable[Sequence[int]],
    geometry: Transform,
    *,
    workers: int,
    pin_memory: bool,
    draft: bool = True,
    decoder: DeviceDecoder | None = None,
    chunk: int | None = None,
) -> Iterable[Batch]:
    """One :class:`Batch` per entry of ``batches`` (positions in ``items``), in that order.

    ``batches`` may be lazy (computing each batch when asked), and ``items`` may still be
    growing: an input is read when its batch is handed to the workers. ``decoder``: JPEGs go
    to the device as its share says (:mod:`._devdecode`); ``chunk``: inputs per worker task
    (None: a whole batch). Iterate it once.
    """
    # Checked now: a bad WSL_IMAGES_START_METHOD is a usage error before any work.
    context = worker_context() if workers else None
    return _Loader(items, batches, geometry, workers, pin_memory, draft, decoder, chunk, context)


@dataclass
class _Loader:
    items: Sequence[ImageInput]
    batches: Iterable[Sequence[int]]
    geometry: Transform
    workers: int
    pin_memory: bool
    draft: bool
    decoder: DeviceDecoder | None
    chunk: int | None
    multiprocessing_context: BaseContext | None  # how the workers start (None: Python's default)

    def __iter__(self) -> Iterator[Batch]:
        loader: DataLoader[Sample] = DataLoader(
            _Work(self.geometry, self.draft),
            batch_sampler=cast(
                "Iterable[list[int]]", _Schedule(self.items, self.batches, self.chunk, self.decoder)
            ),
            num_workers=self.workers,
            collate_fn=_collate,
            pin_memory=self.pin_memory,
            prefetch_factor=4 if self.workers else None,
            multiprocessing_context=self.multiprocessing_context,
        )
        return finish_batches(iter(loader), self.decoder)
