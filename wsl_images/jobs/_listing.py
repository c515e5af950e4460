"""The input listing of a sharded run: written once (rank 0), read a shard at a time by any rank.

``DIR/inputs.jsonl`` holds one encoded entry per line, in input order; ``DIR/inputs-index.npy``
the byte offset where each shard's lines start (one uint64 per shard, plus the end). A rank
reads the index (8 bytes per shard) and then only the lines of the shards it processes, so
neither the listing walk nor its result is repeated or held by every rank.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np

from .._util import atomic_file
from ..inference import Entry, decode, encode
from ._outdir import INDEX_FILE, LISTING_FILE

__all__ = ["Listing", "ListingInfo", "write_listing"]

_BUFFER = 1 << 20


@dataclass(frozen=True)
class ListingInfo:
    """How many entries a listing has, and the sha256 of its lines (the input fingerprint)."""

    count: int
    fingerprint: str


def write_listing(
    folder: Path,
    entries: Iterable[Entry],
    *,
    shard_size: int,
    before_publish: Callable[[ListingInfo], None],
) -> ListingInfo:
    """Write ``entries`` as ``folder``'s listing, atomically, streaming (memory stays flat).

    ``before_publish`` sees the count and fingerprint once every entry is written and before
    the listing replaces an older one: raising there discards the new listing.
    """
    offsets = [0]
    digest = hashlib.sha256()
    count = position = 0
    with atomic_file(folder / LISTING_FILE) as tmp:
        with open(tmp.fd, "wb", buffering=_BUFFER, closefd=False) as out:
            for entry in entries:
                line = (encode(entry) + "\n").encode()
                out.write(line)
                digest.update(line)
                count += 1
                position += len(line)
                if count % shard_size == 0:
                    offsets.append(position)
        if count % shard_size:
            offsets.append(position)
        info = ListingInfo(count, digest.hexdigest())
        before_publish(info)
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(offsets, dtype="<u8"))
    with atomic_file(folder / INDEX_FILE) as tmp, open(tmp.fd, "wb", closefd=False) as out:
        out.write(buffer.getvalue())
    return info


class Listing(Sequence[Entry]):
    """The ``count`` entries of ``folder``'s listing, loaded one shard at a time (and cached)."""

    def __init__(self, folder: Path, *, count: int, shard_size: int) -> None:
        self.path = folder / LISTING_FILE
        self.offsets: list[int] = np.load(folder / INDEX_FILE).tolist()
        self.length, self.shard_size = count, shard_size
        self._cached: tuple[int, list[Entry]] = (-1, [])

    def __len__(self) -> int:
        return self.length

    @overload
    def __getitem__(self, index: int) -> Entry: ...
    @overload
    def __getitem__(self, index: slice) -> list[Entry]: ...
    def __getitem__(self, index: int | slice) -> Entry | list[Entry]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.length))]
        index += self.length if index < 0 else 0
        if not 0 <= index < self.length:
            msg = f"input {index} out of range: the listing has {self.length}"
            raise IndexError(msg)
        shard = index // self.shard_size
        if self._cached[0] != shard:
            self._cached = (shard, self.shard(shard))
        return self._cached[1][index - shard * self.shard_size]

    def shard(self, k: int) -> list[Entry]:
        """The entries of shard ``k``: only its lines are read."""
        start, end = self.offsets[k], self.offsets[k + 1]
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        return [decode(line) for line in data.splitlines()]
