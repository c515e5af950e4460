"""Output of classify/embed: atomic files, and one writer per format.

A file named with ``--output`` is written through :func:`wsl_images._util.atomic_file`: a temp
file beside it, renamed into place when the run ends, so readers never see half a file, a failed
run leaves the old file untouched and a killed run's temp file is removed by the next run.
numpy and torch appear in annotations only: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .._util import atomic_file
from ..errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..inference import Outcome, Prediction

__all__ = [
    "ClassifyWriter",
    "EmbeddingWriter",
    "check_output",
    "format_from",
    "open_output",
]


def check_output(path: str | None, flag: str = "--output") -> None:
    """Refuse early (usage error, before any work) an output file that cannot be written: its
    folder missing or not writable, or the path itself a folder."""
    if path is None:
        return
    target = Path(path).expanduser()
    folder = target.resolve().parent
    if target.is_dir():
        msg = f"{flag} {path!r} is a folder: give the path of a file (it may be in that folder)."
        raise InvalidInputError(msg)
    if not folder.is_dir():
        msg = f"{flag} {path!r}: folder {str(target.parent)!r} does not exist; create it first."
        raise InvalidInputError(msg)
    if not os.access(folder, os.W_OK | os.X_OK):
        msg = f"{flag} {path!r}: folder {str(folder)!r} is not writable; choose another place."
        raise InvalidInputError(msg)


def format_from(path: str | None, by_suffix: Mapping[str, str], default: str | None) -> str | None:
    """The format an output file's extension names (``by_suffix``, case-insensitive), or
    ``default`` when it names none (``.txt``) or there is no file."""
    if path is None:
        return default
    return by_suffix.get(Path(path).suffix.lower(), default)


@contextlib.contextmanager
def open_output(path: str | None) -> Iterator[TextIO]:
    """``path`` for writing text, atomically; stdout when ``path`` is None."""
    if path is None:
        yield _tolerant(sys.stdout)
        return
    with atomic_file(path) as tmp, open(tmp.fd, "w", encoding="utf-8", closefd=False) as out:
        yield out


def _tolerant(stream: TextIO) -> TextIO:
    """``stream``, escaping what its encoding cannot write instead of failing mid-run: on
    Windows a redirected stdout encodes in the ANSI code page (cp1252, ...), which has no
    character for most non-Latin file names."""
    if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
        stream.reconfigure(errors="backslashreplace")
    return stream


class ClassifyWriter:
    """Writes classify outcomes as ``table``, ``jsonl`` or ``csv``."""

    def __init__(self, out: TextIO, fmt: str) -> None:
        self.out, self.fmt = out, fmt
        self.csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if self.csv:
            self.csv.writerow(["path", "rank", "label", "index", "probability", "error"])

    def write(self, path: str, outcome: Outcome[Prediction]) -> None:
        pred, error = outcome.value, outcome.error
        if self.fmt == "jsonl":
            record: dict[str, object] = {"path": path, "error": error}
            if pred is not None:
                record = {"path": path, "predictions": pred.as_dicts()}
            self.out.write(json.dumps(record) + "\n")
        elif self.csv:
            if pred is None:
                self.csv.writerow([path, "", "", "", "", error])
            for rank, d in enumerate(pred.as_dicts() if pred else [], 1):
                self.csv.writerow([path, rank, d["label"], d["index"], d["probability"], ""])
        else:
            self.out.write(f"{path}\n")
            if pred is None:
                self.out.write(f"  error: {error}\n")
            for d in pred.as_dicts() if pred else []:
                self.out.write(f"  {d['probability']:7.2%}  {d['label']} ({d['index']})\n")


class EmbeddingWriter:
    """Writes feature rows as jsonl lines, or into a .npy matrix (row i = input i) + index."""

    def __init__(self, out: TextIO, matrix: np.ndarray | None) -> None:
        self.out, self.matrix = out, matrix

    def write(self, path: str, outcome: Outcome[torch.Tensor]) -> None:
        row, error = outcome.value, outcome.error
        record: dict[str, object]
        if self.matrix is not None:
            self.matrix[outcome.index] = float("nan") if row is None else row.numpy()
            record = {"path": path, "row": outcome.index}
        else:
            record = {"path": path, "embedding": None if row is None else row.tolist()}
        if error is not None:
            record = {**record, "error": error}
            record.pop("embedding", None)
        self.out.write(json.dumps(record) + "\n")
