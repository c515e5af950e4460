"""A run's inputs read while the run goes: a sequence filled from an iterator on demand.

Listing a folder of a million files, or the members of big tar shards, takes a while; a run
need not wait for it. :class:`Growing` pulls entries from the listing only as far as a position
is asked for, so the first batch starts as soon as its inputs are listed. Asking for its length
finishes the listing (an ``.npy`` output needs the count up front; a stream of lines does not).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar, overload

__all__ = ["Growing", "Mapped"]

T = TypeVar("T")
R = TypeVar("R")


class Growing(Sequence[T]):
    """The items of ``source``, listed as far as they are asked for (thread-safe)."""

    def __init__(self, source: Iterable[T]) -> None:
        self._items: list[T] = []
        self._source: Iterator[T] | None = iter(source)
        self._lock = threading.Lock()

    @property
    def known(self) -> int:
        """How many items are listed so far."""
        return len(self._items)

    @property
    def complete(self) -> bool:
        """Whether the whole source has been listed."""
        return self._source is None

    def has(self, index: int) -> bool:
        """Whether item ``index`` exists (listing up to it, no further)."""
        if index < len(self._items):
            return True
        with self._lock:
            while self._source is not None and len(self._items) <= index:
                item = next(self._source, _END)
                if item is _END:
                    self._source = None
                else:
                    self._items.append(item)  # type: ignore[arg-type]
        return index < len(self._items)

    def __len__(self) -> int:
        while not self.complete:
            self.has(len(self._items) + 4095)
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...
    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice) or index < 0:
            len(self)
            return self._items[index]
        if not self.has(index):
            raise IndexError(index)
        return self._items[index]


class Mapped(Sequence[R], Generic[T, R]):
    """``function`` of each item of ``items``, computed when asked for (as lazy as ``items``)."""

    def __init__(self, items: Sequence[T], function: Callable[[T], R]) -> None:
        self.items, self.function = items, function

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> R: ...
    @overload
    def __getitem__(self, index: slice) -> list[R]: ...
    def __getitem__(self, index: int | slice) -> R | list[R]:
        if isinstance(index, slice):
            return [self.function(item) for item in self.items[index]]
        return self.function(self.items[index])


_END = object()
