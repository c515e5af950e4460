"""Tar shards as inputs (webdataset layout): image members are read in place, never extracted.

Listing an archive reads only its headers (``tarfile`` seeks over the data); each image member
becomes a :class:`TarMember` that knows where its bytes lie, so a DataLoader worker reads
exactly those bytes (one seek, one read) and decodes them like a file. Other members (``.json``,
``.txt``, ``.cls`` sidecars) are not inputs.

A member's path in the output is ``ARCHIVE.tar/MEMBER`` on every platform: the archive's path
as the inputs list it (pathlib's form: backslashes on Windows), one "/", and the member's name as
the archive stores it (tar names always use "/"). :func:`split_member_path` reads such a path
back: the archive is the first prefix ending in ``.tar`` that is a file, so a path from the
results can be given as an input again.

A damaged archive does not stop a run: the image members before the damage are inputs, and one
more entry, whose path is the archive itself, carries the error. Damage is a member whose data
runs past the end of the file, a header that cannot be read, or a missing end-of-archive block
(an archive cut exactly between two members).
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import ImageDecodeError

__all__ = ["IMAGE_SUFFIXES", "TarMember", "is_tar", "iter_members", "split_member_path"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
_BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class TarMember:
    """``size`` bytes at ``offset`` of ``archive``: the image member ``name``.

    An entry with ``error`` stands for a damaged archive (``name`` is empty): reading it raises.
    """

    archive: str
    name: str
    offset: int = 0
    size: int = 0
    error: str | None = None

    @property
    def path(self) -> str:
        """``ARCHIVE.tar/MEMBER``, or the archive's own path for a damaged-archive entry."""
        return f"{self.archive}/{self.name}" if self.name else self.archive

    def open(self) -> io.BytesIO:
        """The member's bytes; ``ImageDecodeError`` if the archive is damaged or has shrunk."""
        if self.error is not None:
            raise ImageDecodeError(self.error)
        try:
            with open(self.archive, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.size)
        except OSError as exc:
            msg = f"cannot read tar archive: {exc.strerror or exc}"
            raise ImageDecodeError(msg) from exc
        if len(data) != self.size:
            msg = f"archive ends inside this member ({len(data)} of {self.size} bytes)"
            raise ImageDecodeError(msg)
        return io.BytesIO(data)


def is_tar(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is taken as a tar shard (by its ``.tar`` suffix, any case)."""
    return os.fspath(path).lower().endswith(".tar")


def iter_members(archive: str) -> Iterator[TarMember]:
    """The image members of ``archive`` in archive order; one error entry last if it is damaged."""
    found = 0
    try:
        size = os.path.getsize(archive)
        with tarfile.open(archive, mode="r:") as tar:
            for info in _headers(tar):
                if info.offset_data + info.size > size:
                    yield _damaged(archive, found, f"member {info.name!r} is cut off")
                    return
                if info.isreg() and os.path.splitext(info.name)[1].lower() in IMAGE_SUFFIXES:
                    found += 1
                    yield TarMember(archive, info.name, info.offset_data, info.size)
            if not _ends_properly(archive, tar.offset):
                yield _damaged(archive, found, f"no valid header at byte {tar.offset}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        yield _damaged(archive, found, reason or type(exc).__name__)


def split_member_path(
    path: str, *, is_file: Callable[[str], bool] = os.path.isfile, windows: bool = os.name == "nt"
) -> tuple[str, str] | None:
    """``(ARCHIVE, MEMBER)`` of a path :attr:`TarMember.path` made, or None if it names none.

    The archive is the first prefix ending in ``.tar`` (any case) that is a file and is followed
    by "/": a prefix is a file or a folder, never both, so the split is unambiguous. On Windows
    (``windows``) a backslash after the archive is taken for "/" too, as Windows users type
    paths, and the member's backslashes become the "/" of tar names.
    """
    separators = "/\\" if windows else "/"
    lower = path.lower()
    start = 0
    while (found := lower.find(".tar", start)) != -1:
        end = found + 4
        start = found + 1
        if end + 1 < len(path) and path[end] in separators and is_file(path[:end]):
            member = path[end + 1 :]
            return path[:end], member.replace("\\", "/") if windows else member
    return None


def _headers(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (info := tar.next()) is not None:
        # TarFile keeps every header it has read; a shard of a million members would keep them
        # all. Only the current one is needed here.
        tar.members.clear()  # type: ignore[attr-defined]  # not in typeshed
        yield info


def _ends_properly(archive: str, offset: int) -> bool:
    """tarfile stops quietly at a header it cannot read; a real end is a block of zeros."""
    with open(archive, "rb") as f:
        f.seek(offset)
        block = f.read(_BLOCK)
    return len(block) == _BLOCK and not block.strip(b"\0")


def _damaged(archive: str, found: int, reason: str) -> TarMember:
    msg = (
        f"damaged tar archive ({reason}): its {found} image member(s) before the damage were "
        "read; the rest of it was not"
    )
    return TarMember(archive, "", error=msg)
