"""Checkpoints in torch's legacy (pre-1.6, non-zip) format, memory-mapped where they lie.

The released 2019 files are in this format, which ``torch.load(mmap=True)`` refuses. Its layout
makes mapping easy all the same: four small pickles (magic number, protocol, system info, then
the object, whose tensors name their storages by key), the list of storage keys, then each
storage as an int64 element count followed by its raw little-endian bytes, in that order. So
the file is mapped once (copy-on-write, as ``torch.load(mmap=True)`` maps a zip file) and every
storage becomes a view of the mapping at its offset: no copy is written, no byte of data is read
until used, and a file's first load costs only its sha256 (done by the cache).

Safety: every pickle goes through torch's weights-only unpickler, the one
``torch.load(weights_only=True)`` runs, with its allowlist (and ``add_safe_globals``), so this
accepts exactly the files ``torch.load(weights_only=True)`` accepts and never runs their code.
The one pass builds tensors on storages of the meta device (no memory, no data read); once the
keys' order gives each storage its offset, the tensors are rebuilt on the mapping.

Forms that cannot be mapped (storage views, written only by very old torch versions; a
big-endian machine's file) are read whole with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import _weights_only_unpickler  # torch.load(weights_only=True)'s own unpickler
from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

from .mapping import map_file

__all__ = ["load"]

log = logging.getLogger(__name__)

_COUNT = struct.Struct("<q")  # each storage's element count, just before its bytes


class _UnmappableError(Exception):
    """A valid legacy file this module cannot map (read whole instead)."""


def load(path: Path) -> tuple[object, dict[int, int]]:
    """The object saved in the legacy-format file ``path``, its tensors mapped from the file,
    and where each storage lies in it: ``{storage data_ptr: byte offset}`` (empty if the file
    had to be read whole).

    Raises what ``torch.load(weights_only=True)`` would raise for a file it refuses (a global
    outside the allowlist: ``pickle.UnpicklingError``), and ``ValueError`` for a file that is
    not in this format or is cut short.
    """
    try:
        return _map(path)
    except _UnmappableError as exc:
        log.info("%s cannot be memory-mapped (%s): reading it whole", path.name, exc)
        return torch.load(str(path), map_location="cpu", weights_only=True), {}


def _map(path: Path) -> tuple[object, dict[int, int]]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        if _unpickle(f) != MAGIC_NUMBER:
            msg = "not a torch.save file (no legacy magic number)"
            raise ValueError(msg)
        if _unpickle(f) != PROTOCOL_VERSION:
            msg = "unknown legacy protocol version"
            raise ValueError(msg)
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
        offsets = storages.locate([str(k) for k in keys], f.fileno(), f.tell(), size)
    # The whole file, mapped privately: writes to a tensor (fine-tuning) never reach the file.
    mapping = map_file(path, size)
    views = {
        key: mapping[offset : offset + storages.specs[key][1]] for key, offset in offsets.items()
    }
    where = {views[key].data_ptr(): offset for key, offset in offsets.items()}
    return _rebuild(obj, lambda t: views[storages.key_of(t)]), where


def _unpickle(f: BinaryIO, persistent_load: Callable[[Any], Any] | None = None) -> Any:
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
        key = str(key)
        # An allowlisted torch storage class; its public ``dtype`` warns that TypedStorage is
        # deprecated (torch's own loader reads the same attribute).
        dtype: torch.dtype = storage_type._dtype
        if key not in self.meta:
            storage = torch.UntypedStorage(int(numel) * dtype.itemsize, device="meta")  # type: ignore[no-untyped-call]
            self.specs[key] = (dtype, int(numel) * dtype.itemsize)
            self.meta[key] = storage
            self.keys_by_storage[storage._cdata] = key
        # Wrapped as torch.load wraps it: the unpickler's _rebuild_tensor_v2 expects this type.
        return torch.storage.TypedStorage(  # type: ignore[no-untyped-call]
            wrap_storage=self.meta[key], dtype=dtype, _internal=True
        )

    def locate(self, keys: list[str], fd: int, start: int, size: int) -> dict[str, int]:
        """Byte offset of each storage's data, checking the element count written before it."""
        offsets = {}
        pos = start
        for key in keys:
            dtype, nbytes = self.specs[key]
            head = os.pread(fd, _COUNT.size, pos)
            if len(head) < _COUNT.size or pos + _COUNT.size + nbytes > size:
                msg = f"the file is cut short ({size} bytes) in storage {key!r}"
                raise ValueError(msg)
            (count,) = _COUNT.unpack(head)
            if count * dtype.itemsize != nbytes:
                msg = f"storage {key!r} holds {count} elements, its tensors say {nbytes} bytes"
                raise ValueError(msg)
            offsets[key] = pos + _COUNT.size
            pos += _COUNT.size + nbytes
        return offsets

    def key_of(self, tensor: torch.Tensor) -> str:
        return self.keys_by_storage[tensor.untyped_storage()._cdata]


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
