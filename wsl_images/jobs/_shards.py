"""Shards of a sharded run: the batches a rank runs, and the files its outcomes become.

Batches never cross a shard's end: shard k is always cut into the same batches, whichever rank
runs it and whichever shards were done before, so a resumed run or another world size computes
every input in the same batch as an uninterrupted single process (identical values, not just
close ones, on a deterministic device).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO, overload

import numpy as np

from .._util import atomic_file
from ..inference import Entry, Outcome, entry_path
from ._outdir import shard_path

__all__ = ["ShardBatches", "ShardSink"]

log = logging.getLogger(__name__)


class ShardBatches(Sequence[range]):
    """The batches of ``shards`` (in order): consecutive inputs, at most ``batch_size`` each."""

    def __init__(self, shards: Sequence[int], *, shard_size: int, count: int, batch_size: int):
        self.shards, self.shard_size, self.inputs = list(shards), shard_size, count
        self.batch_size = batch_size
        self._starts = [0]  # first batch number of each shard, then the total
        for k in self.shards:
            self._starts.append(self._starts[-1] + -(-self._size(k) // batch_size))

    def _size(self, k: int) -> int:
        return min(self.shard_size, self.inputs - k * self.shard_size)

    def images(self) -> int:
        """How many inputs these shards hold."""
        return sum(self._size(k) for k in self.shards)

    def __len__(self) -> int:
        return self._starts[-1]

    @overload
    def __getitem__(self, b: int) -> range: ...
    @overload
    def __getitem__(self, b: slice) -> list[range]: ...
    def __getitem__(self, b: int | slice) -> range | list[range]:
        if isinstance(b, slice):
            return [self[i] for i in range(*b.indices(len(self)))]
        b += len(self) if b < 0 else 0
        if not 0 <= b < len(self):
            raise IndexError(b)
        j = bisect.bisect_right(self._starts, b) - 1
        k = self.shards[j]
        first = k * self.shard_size + (b - self._starts[j]) * self.batch_size
        return range(first, min(first + self.batch_size, k * self.shard_size + self._size(k)))


class ShardSink(contextlib.AbstractContextManager["ShardSink"]):
    """Writes outcomes, which arrive in order and by whole shards, as shard files.

    classify: ``shard-K.jsonl`` lines as ``--format jsonl``. embed (``width`` given): the good
    rows go to ``shard-K.npy`` (float32), published first, and each line says
    ``{"path", "row"}`` (its row in that file) or ``{"path", "error"}``. A shard not finished
    when the sink closes is discarded: only its temp file existed.
    """

    def __init__(
        self, folder: Path, inputs: Sequence[Entry], *, shard_size: int, width: int | None
    ) -> None:
        self.folder, self.inputs, self.shard_size = folder, inputs, shard_size
        self.rows = np.empty((shard_size, width), np.float32) if width is not None else None
        self.failed = 0
        self.published: list[int] = []  # the shards this sink completed, in order
        self._stack = contextlib.ExitStack()
        self._shard, self._left, self._good = -1, 0, 0
        self._out: TextIO | None = None

    @property
    def written(self) -> int:
        """How many shards this sink completed."""
        return len(self.published)

    def write(self, outcome: Outcome[Any]) -> None:
        """Add one input's line (and row); publishes its shard when it is the shard's last."""
        out = self._out or self._open(outcome.index // self.shard_size)
        path = entry_path(self.inputs[outcome.index])
        record: dict[str, object]
        value = outcome.value
        if value is None:
            record = {"path": path, "error": outcome.error}
            self.failed += 1
        elif self.rows is None:
            record = {"path": path, "predictions": value.as_dicts()}
        else:
            self.rows[self._good] = value.numpy()
            record = {"path": path, "row": self._good}
            self._good += 1
        out.write(json.dumps(record) + "\n")
        self._left -= 1
        if self._left == 0:
            self._publish()

    def _open(self, k: int) -> TextIO:
        self._shard, self._good = k, 0
        self._left = min(self.shard_size, len(self.inputs) - k * self.shard_size)
        tmp = self._stack.enter_context(atomic_file(shard_path(self.folder, k)))
        # Held open across write() calls; the ExitStack closes it before publishing.
        out = open(tmp.fd, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        self._out = self._stack.enter_context(out)
        return self._out

    def _publish(self) -> None:
        if self.rows is not None:
            npy = shard_path(self.folder, self._shard, ".npy")
            with atomic_file(npy) as tmp, open(tmp.fd, "wb", closefd=False) as f:
                np.save(f, self.rows[: self._good])
        self._out = None
        self._stack.close()  # flushes the lines, then renames the .jsonl: the shard is complete
        self.published.append(self._shard)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._out is None:
            return
        # An unfinished shard (the run failed or was interrupted): hand atomic_file an error so
        # that it removes the temp file instead of publishing it.
        self._out = None
        error = error or _UnfinishedShardError(f"shard {self._shard} has {self._left} inputs to go")
        log.warning("Shard %d not finished; discarded", self._shard)
        self._stack.__exit__(type(error), error, error.__traceback__)


class _UnfinishedShardError(Exception):
    """Outcomes stopped before the end of a shard."""
