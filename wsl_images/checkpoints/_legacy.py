"""Checkpoints in torch's legacy (pre-1.6, non-zip) format, mapped where they lie or read.

The released 2019 files are in this format, which ``torch.load(mmap=True)`` refuses. Its layout
makes mapping easy all the same: four small pickles (magic number, protocol, system info, then
the object, whose tensors name their storages by key), the list of storage keys, then each
storage as an int64 element count followed by its raw little-endian bytes, in that order. So
the file is mapped once (copy-on-write, as ``torch.load(mmap=True)`` maps a zip file) and every
storage becomes a view of the mapping at its offset: no copy is written, no byte of data is read
until used, and a file's first load costs only its sha256 (done by the cache). Unmapped
(``mmap=False``, for files a user may rewrite), each storage is read into memory of its own
instead, once: no second copy of the file is ever held.

Safety: every pickle goes through torch's weights-only unpickler, the one
``torch.load(weights_only=True)`` runs, with its allowlist (and ``add_safe_globals``), so this
accepts exactly the files ``torch.load(weights_only=True)`` accepts and never runs their code.
The one pass builds tensors on storages of the meta device (no memory, no data read); once the
keys' order gives each storage its offset, the tensors are rebuilt on the mapping (or the
bytes read).

That fast path leans on parts of torch that are not public (the unpickler module, the
``_internal`` keyword of ``TypedStorage``, a storage's ``_cdata``). Any failure of it that is
not a refusal (nor a file shown to be cut short) reads the file with the public
``torch.load(weights_only=True)`` instead, and logs why; never with the check turned off.
So do forms it cannot map: storage views (written only by very old torch versions), a
big-endian machine's file, quantized storages.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ._formats import refused_global
from ._mapping import map_file

__all__ = ["FileError", "load"]

log = logging.getLogger(__name__)

_COUNT = struct.Struct("<q")  # each storage's element count, just before its bytes
# The format's constants (torch.serialization.MAGIC_NUMBER, PROTOCOL_VERSION): fixed forever,
# written by every torch.save of the legacy format.
_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001
# The storage classes the allowlist lets a legacy file name, by name; quantized storages are
# left to torch.load.
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexDoubleStorage": torch.complex128,
    "ComplexFloatStorage": torch.complex64,
}


class FileError(ValueError):
    """The file itself is not a readable legacy checkpoint: not one, or cut short."""


class _UnmappableError(Exception):
    """A valid legacy file this module cannot map (read by torch.load instead)."""


def load(path: Path, *, mmap: bool = True) -> tuple[object, dict[int, int]]:
    """The object saved in the legacy-format file ``path``, and where each storage lies in the
    file: ``{storage data_ptr: byte offset}`` (empty unless mapped).

    ``mmap``: tensors are views of a copy-on-write mapping of the file (a rewrite of the file
    shows through); else each storage is read into memory of its own.

    Raises what ``torch.load(weights_only=True)`` raises for a file it refuses (a global
    outside the allowlist), :class:`FileError` for a file that is not in this format or is cut
    short, and what ``torch.load`` raises for a file neither reader can read.
    """
    try:
        return _load(path, mmap=mmap)
    except FileError:
        raise
    except Exception as exc:
        if refused_global(exc) is not None:
            raise
        if isinstance(exc, _UnmappableError):
            log.info("%s: %s; reading it with torch.load(weights_only=True)", path.name, exc)
        else:  # the fast path broke (a torch without its private parts?): the public way
            log.warning(
                "Reading %s with torch.load(weights_only=True): the fast reader failed (%s: %s)",
                path.name,
                type(exc).__name__,
                exc,
            )
        return torch.load(str(path), map_location="cpu", weights_only=True), {}


def _load(path: Path, *, mmap: bool) -> tuple[object, dict[int, int]]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        if _unpickle(f) != _MAGIC_NUMBER:
            msg = "it is not a torch.save file (no legacy magic number)"
            raise FileError(msg)
        if _unpickle(f) != _PROTOCOL_VERSION:
            msg = "unknown legacy protocol version"
            raise FileError(msg)
        info = _unpickle(f)
        if not isinstance(info, dict) or info.get("little_endian") is not True:
            msg = "written on a big-endian machine"
            raise _UnmappableError(msg)
        storages = _Storages()
        obj = _unpickle(f, persistent_load=storages.placeholder)
        keys = _unpickle(f)
        if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages.specs):
            msg = "its storage list does not match the storages its tensors use"
            raise ValueError(msg)
        offsets = storages.locate([str(k) for k in keys], f, f.tell(), size)
        if not mmap:
            read = {
                key: _read_storage(f, offset, storages.specs[key][1])
                for key, offset in offsets.items()
            }
            return _rebuild(obj, lambda t: read[storages.key_of(t)]), {}
    # The whole file, mapped privately: writes to a tensor (fine-tuning) never reach the file.
    mapping = map_file(path, size)
    views = {
        key: mapping[offset : offset + storages.specs[key][1]] for key, offset in offsets.items()
    }
    where = {views[key].data_ptr(): offset for key, offset in offsets.items()}
    return _rebuild(obj, lambda t: views[storages.key_of(t)]), where


def _unpickle(f: BinaryIO, persistent_load: Callable[[Any], Any] | None = None) -> Any:
    # torch.load(weights_only=True)'s own unpickler; imported here, so that a torch without it
    # only sends each load to torch.load.
    from torch import _weights_only_unpickler

    unpickler = _weights_only_unpickler.Unpickler(f, encoding="utf-8")  # as torch.load
    if persistent_load is not None:
        unpickler.persistent_load = persistent_load  # type: ignore[method-assign]
    return unpickler.load()  # type: ignore[no-untyped-call]


class _Storages:
    """The storages the object's tensors use: stand-ins on the meta device while unpickling,
    then their offsets in the file."""

    def __init__(self) -> None:
        self.specs: dict[str, tuple[torch.dtype, int]] = {}  # key -> (dtype, bytes)
        self.meta: dict[str, torch.UntypedStorage] = {}
        self.keys_by_storage: dict[int, str] = {}

    def placeholder(self, pid: Any) -> Any:
        """``persistent_load``: a meta storage of the right type and size for a storage key."""
        if not isinstance(pid, tuple) or len(pid) != 6:
            msg = f"unexpected persistent id {pid!r}"
            raise ValueError(msg)
        _, storage_type, key, _location, numel, view = pid  # the unpickler checked the kind
        if view is not None:
            msg = "it holds storage views"
            raise _UnmappableError(msg)
        dtype = _storage_dtype(storage_type)
        if dtype is None:
            msg = f"it holds storages of type {storage_type!r}"
            raise _UnmappableError(msg)
        key = str(key)
        if key not in self.meta:
            storage = torch.UntypedStorage(int(numel) * dtype.itemsize, device="meta")  # type: ignore[no-untyped-call]
            self.specs[key] = (dtype, int(numel) * dtype.itemsize)
            self.meta[key] = storage
            self.keys_by_storage[storage._cdata] = key
        # Wrapped as torch.load wraps it: the unpickler's _rebuild_tensor_v2 expects this type.
        return torch.TypedStorage(  # type: ignore[no-untyped-call]
            wrap_storage=self.meta[key], dtype=dtype, _internal=True
        )

    def locate(self, keys: list[str], f: BinaryIO, start: int, size: int) -> dict[str, int]:
        """Byte offset of each storage's data, checking the element count written before it."""
        offsets = {}
        pos = start
        for key in keys:
            dtype, nbytes = self.specs[key]
            head = _read_at(f, _COUNT.size, pos)
            if len(head) < _COUNT.size or pos + _COUNT.size + nbytes > size:
                msg = f"the file is cut short ({size} bytes) in storage {key!r}"
                raise FileError(msg)
            (count,) = _COUNT.unpack(head)
            if count * dtype.itemsize != nbytes:
                msg = f"storage {key!r} holds {count} elements, its tensors say {nbytes} bytes"
                raise ValueError(msg)
            offsets[key] = pos + _COUNT.size
            pos += _COUNT.size + nbytes
        return offsets

    def key_of(self, tensor: torch.Tensor) -> str:
        return self.keys_by_storage[tensor.untyped_storage()._cdata]


def _storage_dtype(storage_type: object) -> torch.dtype | None:
    """The element type of a storage type as the unpickler gives it: a storage class
    (``torch.FloatStorage``, torch < 2.4) or a ``StorageType`` with a ``dtype`` (later)."""
    if isinstance(
        storage_type, type
    ):  # by name: the classes' ``dtype`` warns, ``_dtype`` is private
        return _STORAGE_DTYPES.get(storage_type.__name__)
    dtype = getattr(storage_type, "dtype", None)
    return dtype if dtype in _STORAGE_DTYPES.values() else None


def _rebuild(obj: Any, storage_of: Callable[[torch.Tensor], torch.UntypedStorage]) -> Any:
    """``obj`` with each meta tensor in its plain containers rebuilt on its mapped storage."""
    if isinstance(obj, torch.Tensor):
        if not obj.is_meta:
            return obj
        mapped = torch.empty((0,), dtype=obj.dtype).set_(
            storage_of(obj), obj.storage_offset(), obj.size(), obj.stride()
        )
        if isinstance(obj, torch.nn.Parameter):
            return torch.nn.Parameter(mapped, requires_grad=obj.requires_grad)
        return mapped
    if isinstance(obj, dict):
        rebuilt = {k: _rebuild(v, storage_of) for k, v in obj.items()}
        return OrderedDict(rebuilt) if isinstance(obj, OrderedDict) else rebuilt
    if isinstance(obj, list | tuple) and not hasattr(obj, "_fields"):
        items = [_rebuild(v, storage_of) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    return obj


def _read_at(f: BinaryIO, n: int, pos: int) -> bytes:
    """``n`` bytes of ``f`` at ``pos`` (fewer at the end of the file)."""
    pread = getattr(os, "pread", None)  # POSIX only: not on Windows
    if pread is not None:
        return bytes(pread(f.fileno(), n, pos))
    f.seek(pos)
    return f.read(n)


def _read_storage(f: BinaryIO, offset: int, nbytes: int) -> torch.UntypedStorage:
    """``nbytes`` of ``f`` from ``offset``, read straight into a new CPU storage (one copy)."""
    data = torch.empty((nbytes,), dtype=torch.uint8)
    if nbytes:
        # A writable view of the tensor's memory, so the file is read into it with no buffer
        # in between (Tensor.numpy() would need numpy, and a numpy matching torch's build).
        buffer = memoryview((ctypes.c_ubyte * nbytes).from_address(data.data_ptr())).cast("B")
        f.seek(offset)
        done = 0
        while done < nbytes:
            got = f.readinto(buffer[done:])  # type: ignore[attr-defined]
            if not got:
                msg = f"the file is cut short: {nbytes - done} bytes missing at {offset + done}"
                raise FileError(msg)
            done += got
    return data.untyped_storage()
