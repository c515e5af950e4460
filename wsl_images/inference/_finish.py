"""The chunks the workers return, joined into the caller's batches and finished on the device.

Without a device decoder a batch is the workers' chunks joined, as they made them. With one, a
thread of its own takes each batch, decodes its JPEG bytes on the device (:mod:`._devdecode`),
copies the workers' crops there, and hands the model a complete float batch, in input order,
while the model computes the previous one. On CUDA that thread works on a stream of its own;
the model's stream waits for the batch's event before it reads the batch. The waits on either
side of that thread are what an adaptive share (:mod:`._share`) steers by.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext, suppress
from typing import Any

import torch

from ._batch import Batch
from ._devdecode import DeviceDecoder

__all__ = ["finish", "finish_batches", "join"]

_AHEAD = 2  # finished batches waiting for the model


def finish_batches(chunks: Iterator[Batch], decoder: DeviceDecoder | None) -> Iterator[Batch]:
    """The caller's batches, in order, from the workers' ``chunks``."""
    if decoder is None:
        return _joined(chunks)
    return _Finisher(chunks, decoder).run()


def _joined(chunks: Iterator[Batch]) -> Iterator[Batch]:
    parts: list[Batch] = []
    for chunk in chunks:
        parts.append(chunk)
        if chunk.last:
            yield join(parts)
            parts = []


def join(parts: list[Batch]) -> Batch:
    """One batch of consecutive chunks (crops, errors and JPEG bytes, in order)."""
    if len(parts) == 1:
        return parts[0]
    images = [p.images for p in parts if p.images is not None]
    if any(t.dtype != torch.uint8 for t in images):
        images = [t.float() / 255 if t.dtype == torch.uint8 else t for t in images]
    spans, blobs, offset, start = [], [], 0, 0
    for p in parts:
        if p.encoded is not None:
            spans += [(pos + offset, s + start, n, o) for pos, s, n, o in p.spans]
            blobs.append(p.encoded)
            start += p.encoded.numel()
        offset += len(p.indices)
    return Batch(
        indices=[i for p in parts for i in p.indices],
        images=torch.cat(images) if images else None,
        errors=[e for p in parts for e in p.errors],
        encoded=torch.cat(blobs) if blobs else None,
        spans=spans,
        group=parts[0].group,
    )


def finish(batch: Batch, decoder: DeviceDecoder) -> Batch:
    """``batch`` with its JPEG bytes decoded and cropped on the device: one float batch (0-1)
    there, rows in input order; a file neither the device nor the CPU could read is an error."""
    if batch.encoded is None or not batch.spans:
        decoder.stats.cpu += 0 if batch.images is None else len(batch.images)
        return batch
    views = [(batch.encoded[s : s + n], o) for _, s, n, o in batch.spans]
    crops = decoder.crops(views)
    errors = list(batch.errors)
    pending = {pos for pos, _, _, _ in batch.spans}
    from_device: dict[int, torch.Tensor] = {}
    for (pos, _, _, _), crop in zip(batch.spans, crops, strict=True):
        if isinstance(crop, str):
            errors[pos] = crop
        else:
            from_device[pos] = crop
    good = [p for p in range(len(errors)) if errors[p] is None]
    cpu_rows = [r for r, p in enumerate(good) if p not in pending]
    device_rows = [r for r, p in enumerate(good) if p in from_device]
    decoder.stats.cpu += len(cpu_rows)
    if not good:
        return Batch(batch.indices, None, errors, group=batch.group)
    shapes = [t.shape for t in from_device.values()]
    shapes += [] if batch.images is None else [batch.images.shape[1:]]
    out = torch.empty((len(good), *shapes[0]), dtype=torch.float32, device=decoder.device)
    if cpu_rows and batch.images is not None:
        cpu = batch.images.to(decoder.device, non_blocking=True)
        out[cpu_rows] = cpu.float().div_(255) if cpu.dtype == torch.uint8 else cpu.float()
    if device_rows:
        out[device_rows] = torch.stack([from_device[good[r]] for r in device_rows])
    return Batch(batch.indices, out, errors, group=batch.group)


class _Finisher:
    """Finishes batches in a thread, ``_AHEAD`` at most before the model takes them."""

    def __init__(self, chunks: Iterator[Batch], decoder: DeviceDecoder) -> None:
        self.chunks, self.decoder = chunks, decoder
        self.ready: queue.Queue[Any] = queue.Queue(maxsize=_AHEAD)
        self.stop = threading.Event()
        self.model_wait = 0.0  # the model's last wait for a finished batch (seconds)
        cuda = decoder.device.type == "cuda"
        self.stream = torch.cuda.Stream(decoder.device) if cuda else None  # type: ignore[no-untyped-call]

    def run(self) -> Iterator[Batch]:
        thread = threading.Thread(target=self._work, name="wsl-images-decode", daemon=True)
        thread.start()
        try:
            while True:
                started = time.perf_counter()
                item = self.ready.get()
                self.model_wait = time.perf_counter() - started
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, event = item
                if event is not None and batch.images is not None and batch.images.is_cuda:
                    stream = torch.cuda.current_stream(self.decoder.device)
                    stream.wait_event(event)
                    batch.images.record_stream(stream)  # freed only once the model is done
                yield batch
        finally:
            self.stop.set()
            while thread.is_alive():  # unblock a put waiting for room
                with suppress(queue.Empty):
                    self.ready.get(timeout=0.05)

    def _work(self) -> None:
        try:
            share, last = self.decoder.share, time.perf_counter()
            for batch, loader_wait in self._timed():
                with torch.cuda.stream(self.stream) if self.stream else nullcontext():
                    done = finish(batch, self.decoder)
                    event = torch.cuda.Event() if self.stream else None  # type: ignore[no-untyped-call]
                    if event is not None:
                        event.record(self.stream)
                now = time.perf_counter()
                share.observe(
                    loader_wait=loader_wait, model_wait=self.model_wait, period=now - last
                )
                self.decoder.stats.shares.append(share.fraction)
                if not self._put((done, event)):
                    return
            self._put(None)
        except BaseException as exc:  # the model's side raises it
            self._put(exc)

    def _timed(self) -> Iterator[tuple[Batch, float]]:
        """The joined batches, each with the time spent waiting for its chunks."""
        parts: list[Batch] = []
        waited = 0.0
        while not self.stop.is_set():
            started = time.perf_counter()
            chunk = next(self.chunks, None)
            waited += time.perf_counter() - started
            if chunk is None:
                return
            parts.append(chunk)
            if chunk.last:
                yield join(parts), waited
                parts, waited = [], 0.0

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False
