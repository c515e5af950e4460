"""Reading a sharded run (``--output-dir DIR``): its rows in input order, its features as a matrix.

>>> for row in wsl_images.read_results("out/"):
...     print(row.path, row.error or row.predictions[0]["label"])
>>> features = wsl_images.read_embeddings("emb/")  # (good inputs, 2048), memory-mapped
>>> features[10:20]
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ._outdir import RunSpec, missing_shards, read_spec, shard_path

__all__ = ["EmbeddingMatrix", "ResultRow", "read_embeddings", "read_results"]


@dataclass(frozen=True)
class ResultRow:
    """Input ``index`` of a sharded run: its ``path`` and its result, or its ``error``.

    classify: ``predictions``, dicts with ``label``, ``index`` and ``probability``, most probable
    first (as ``--format jsonl``). embed: ``embedding``, a read-only float32 row memory-mapped
    from its shard, and ``row``, its row in :func:`read_embeddings`.
    """

    index: int
    path: str
    predictions: list[dict[str, Any]] | None = None
    embedding: np.ndarray | None = None
    row: int | None = None
    error: str | None = None


def read_results(folder: str | os.PathLike[str], *, partial: bool = False) -> Iterator[ResultRow]:
    """Every input of the run in ``folder``, in input order, one shard in memory at a time.

    An unfinished run raises ``InvalidInputError`` naming the missing shards;
    ``partial=True`` yields the rows of the complete shards instead (rows of the missing ones
    are skipped; ``row`` then counts the rows present).
    """
    path = Path(folder)
    spec, shards = _complete_shards(path, partial=partial)
    first_row = 0
    for k in shards:
        rows = _load_rows(path, k) if spec.command == "embed" else None
        lines = shard_path(path, k).read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            record = json.loads(line)
            row = record.get("row")
            yield ResultRow(
                index=k * spec.shard_size + i,
                path=record["path"],
                predictions=record.get("predictions"),
                embedding=None if rows is None or row is None else rows[row],
                row=None if row is None else first_row + row,
                error=record.get("error"),
            )
        first_row += 0 if rows is None else len(rows)


def read_embeddings(folder: str | os.PathLike[str], *, partial: bool = False) -> EmbeddingMatrix:
    """The feature rows of an ``embed`` run, all shards in input order, as one matrix.

    Row ``r`` is the ``row`` of :func:`read_results` (failed inputs have none). Backed by the
    shards' memory-mapped ``.npy`` files: opening reads only their headers.
    """
    path = Path(folder)
    spec, shards = _complete_shards(path, partial=partial)
    if spec.command != "embed":
        msg = f"{str(path)!r} holds a {spec.command!r} run: read_embeddings needs an embed run."
        raise InvalidInputError(msg)
    return EmbeddingMatrix([_load_rows(path, k) for k in shards])


class EmbeddingMatrix:
    """Several row blocks (one per shard) read as one read-only float32 matrix.

    ``m[i]`` is a row (no copy), ``m[a:b]`` and ``m[[i, j, ...]]`` copy just those rows,
    ``np.asarray(m)`` reads everything into memory. ``parts`` are the per-shard memory maps, for
    work done block by block (adding to a search index, say).
    """

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self._starts = [0]
        for part in parts:
            self._starts.append(self._starts[-1] + len(part))
        width = parts[0].shape[1] if parts else 0
        self.shape: tuple[int, int] = (self._starts[-1], width)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {int(key)} out of range for {len(self)} rows")
            j = bisect.bisect_right(self._starts, i) - 1
            row: np.ndarray = self.parts[j][i - self._starts[j]]
            return row
        if isinstance(key, slice):
            key = range(*key.indices(len(self)))
        rows = [self[int(i)] for i in key]
        return np.stack(rows) if rows else np.empty((0, self.shape[1]), self.dtype)

    def __iter__(self) -> Iterator[np.ndarray]:
        for part in self.parts:
            yield from part

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = np.concatenate(self.parts) if self.parts else np.empty(self.shape, self.dtype)
        return whole if dtype is None else whole.astype(dtype)


def _complete_shards(folder: Path, *, partial: bool) -> tuple[RunSpec, list[int]]:
    spec = read_spec(folder) if folder.is_dir() else None
    if spec is None:
        msg = f"{str(folder)!r} holds no sharded run (no run.json): give an --output-dir folder."
        raise InvalidInputError(msg)
    missing = set(missing_shards(folder, spec))
    if missing and not partial:
        msg = (
            f"The run in {str(folder)!r} is not finished: {len(missing)} of {spec.shards} shards "
            f"are missing (first: {min(missing)}). Run the same command again to finish it, or "
            "pass partial=True to read the complete shards."
        )
        raise InvalidInputError(msg)
    return spec, [k for k in range(spec.shards) if k not in missing]


def _load_rows(folder: Path, k: int) -> np.ndarray:
    rows: np.ndarray = np.load(shard_path(folder, k, ".npy"), mmap_mode="r")
    return rows
