"""The inputs of classify/embed: arguments expanded to entries, in one deterministic order.

An entry is a file path (``str``) or a :class:`._tars.TarMember`. The order: as given;
a folder walked recursively in sorted path order (image files and ``.tar`` shards); a ``.tar``
expanded to its image members in archive order. Entries are produced one at a time, so a list
of millions never has to be held to be written out. Each entry has a one-line JSON form: the
listing a sharded run keeps in its folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO, Union

from ._images import image_extensions, walk_files
from ._tars import TarMember, is_tar, iter_members

__all__ = ["Entry", "decode", "encode", "entry_path", "iter_inputs", "read_lines"]

Entry = Union[str, TarMember]  # noqa: UP007 - a runtime alias, Python 3.10


def iter_inputs(items: Iterable[str]) -> Iterator[Entry]:
    """Entries of ``items`` (files, folders, ``.tar`` shards) in input order."""
    suffixes = image_extensions() | {".tar"}
    for item in items:
        path = Path(item)
        if path.is_dir():
            for found in walk_files(path, suffixes):
                yield from _expand(str(found))
        else:
            yield from _expand(str(path))


def _expand(path: str) -> Iterator[Entry]:
    if is_tar(path):
        yield from iter_members(path)
    else:
        yield path


def read_lines(source: TextIO) -> Iterator[str]:
    """One path per line (stdin, ``--files-from``); blank lines are skipped."""
    for line in source:
        text = line.rstrip("\r\n")
        if text.strip():
            yield text


def entry_path(entry: Entry) -> str:
    """The path an entry has in the output (``ARCHIVE.tar/MEMBER`` for a tar member)."""
    return entry if isinstance(entry, str) else entry.path


def encode(entry: Entry) -> str:
    """One line of JSON (no newline): a string for a file, a list for a tar member."""
    if isinstance(entry, str):
        return json.dumps(entry)
    fields: list[object] = [entry.archive, entry.name, entry.offset, entry.size]
    if entry.error is not None:
        fields.append(entry.error)
    return json.dumps(fields)


def decode(line: str | bytes) -> Entry:
    """The entry :func:`encode` wrote."""
    value = json.loads(line)
    if isinstance(value, str):
        return value
    archive, name, offset, size, *error = value
    return TarMember(archive, name, offset, size, error[0] if error else None)
