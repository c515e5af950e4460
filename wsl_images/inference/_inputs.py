"""The inputs of classify/embed: arguments expanded to entries, in one deterministic order.

An entry is a file path (``str``) or a :class:`._tars.TarMember`. The order: as given;
a folder walked recursively in sorted path order (image files and ``.tar`` shards); a ``.tar``
expanded to its image members in archive order; a member's own path (``ARCHIVE.tar/MEMBER``, as
the output names it) is that member, so failed inputs can be given again. Entries are produced
one at a time, so a list of millions never has to be held to be written out. Each entry has a
one-line JSON form: the listing a sharded run keeps in its folder.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO, Union

from ._images import image_extensions, walk_files
from ._tars import TarMember, is_tar, iter_members, split_member_path

__all__ = ["Entry", "decode", "encode", "entry_path", "iter_inputs", "read_lines"]

Entry = Union[str, TarMember]  # noqa: UP007 - a runtime alias, Python 3.10


def iter_inputs(items: Iterable[str]) -> Iterator[Entry]:
    """Entries of ``items`` (files, folders, ``.tar`` shards, tar members) in input order."""
    suffixes = image_extensions() | {".tar"}
    members = _Members()
    for item in items:
        path = Path(item)
        kind = _kind(path)
        if kind == "folder":
            for found in walk_files(path, suffixes):
                yield from _expand(str(found))
        elif kind == "missing" and (split := split_member_path(item)) is not None:
            yield members.find(str(Path(split[0])), split[1])
        else:
            yield from _expand(str(path))


def _kind(path: Path) -> str:
    """folder, missing or other, from one stat (a missing path may name a tar member)."""
    try:
        return "folder" if stat.S_ISDIR(os.stat(path).st_mode) else "other"
    except (FileNotFoundError, NotADirectoryError):  # ARCHIVE.tar/MEMBER: not a directory
        return "missing"
    except (OSError, ValueError):  # unreadable: an error when the file is read
        return "other"


class _Members:
    """The image members of the archive last asked about, by name: members' paths come grouped
    by archive (as a run lists them), so an archive's headers are read once per group."""

    def __init__(self) -> None:
        self.archive: str | None = None
        self.by_name: dict[str, TarMember] = {}
        self.damage: str | None = None

    def find(self, archive: str, name: str) -> TarMember:
        if archive != self.archive:
            self.archive, self.by_name, self.damage = archive, {}, None
            for member in iter_members(archive):
                if member.error is not None:
                    self.damage = member.error
                else:
                    self.by_name.setdefault(member.name, member)
        found = self.by_name.get(name)
        if found is not None:
            return found
        why = f"no image member {name!r} in tar archive {archive!r}"
        return TarMember(archive, name, error=why + (f" ({self.damage})" if self.damage else ""))


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
