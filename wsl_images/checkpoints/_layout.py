"""A state dict's layout in its file, so later loads map the tensors without parsing the file.

Parsing a checkpoint's pickle with torch's weights-only unpickler (pure Python) is most of a
cached load's fixed cost: about 40 ms for a ResNeXt-101's 626 tensors, the time of a fifth of its
forward pass. The layout, written once after that parse, lists each tensor's dtype, shape,
stride and byte offset in the file (like a safetensors header): later loads map the file and
place each tensor from it, with no unpickling. It is JSON, read as data only; the cache keeps it
tied to its source's sha256 and hash-checks it on every read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from ._mapping import map_file

__all__ = ["describe", "map_tensors"]

_VERSION = 1
_DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}


def describe(state: Mapping[str, torch.Tensor], offsets: Mapping[int, int], size: int) -> bytes:
    """The layout of ``state``, whose storages lie in a file of ``size`` bytes at ``offsets``
    (``{storage data_ptr: byte offset}``). ``KeyError`` if a tensor is not from that file."""
    tensors = {}
    for name, t in state.items():
        storage = t.untyped_storage()
        dtype = str(t.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise KeyError(dtype)
        offset = offsets[storage.data_ptr()]
        extent = [offset, storage.nbytes(), t.storage_offset(), list(t.shape), list(t.stride())]
        tensors[name] = [dtype, *extent]
    return json.dumps({"version": _VERSION, "size": size, "tensors": tensors}).encode()


def map_tensors(path: Path, layout: bytes) -> dict[str, torch.Tensor]:
    """The state dict described by ``layout``, mapped from the file at ``path``.

    ``ValueError`` if the layout does not fit the file (another size, a tensor outside it).
    """
    try:
        data = json.loads(layout)
        size = int(data["size"])
        entries = dict(data["tensors"])
        if data["version"] != _VERSION or size != path.stat().st_size:
            msg = "the layout is for another file"
            raise ValueError(msg)
        # Copy-on-write, as torch.load(mmap=True): a write to a tensor never reaches the file.
        mapping = _mapped(path, size)
        state = {}
        for name, (dtype, offset, nbytes, start, shape, stride) in entries.items():
            if not 0 <= offset <= offset + nbytes <= size:
                msg = f"tensor {name!r} lies outside the file"
                raise ValueError(msg)
            storage = mapping[offset : offset + nbytes]
            # set_ checks that shape and stride from ``start`` stay inside the storage.
            state[str(name)] = torch.empty((0,), dtype=_DTYPES[dtype]).set_(
                storage, int(start), shape, stride
            )
        return state
    except (KeyError, TypeError, RuntimeError, json.JSONDecodeError) as exc:
        msg = f"the layout does not describe the file: {exc}"
        raise ValueError(msg) from exc


def _mapped(path: Path, size: int) -> torch.UntypedStorage:
    """The file mapped; a failure of the mapping itself (no address space, a platform or file
    system that cannot map the file) is named as such, not blamed on the layout."""
    try:
        return map_file(path, size)
    except (OSError, RuntimeError) as exc:
        msg = f"mapping the file failed ({type(exc).__name__}: {exc})"
        raise ValueError(msg) from exc
