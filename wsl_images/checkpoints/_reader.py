"""State dicts from checkpoint files: ``weights_only`` always, zero-copy where it is safe.

This module only reads. Its caller says whether a file may be mapped: files of the cache are,
since the cache only ever replaces them by rename: zip files by ``torch.load(mmap=True)``
(torch >= 2.1), legacy (pre-1.6) files, the released ones, by :mod:`._legacy`. Tensors are
views of the page cache, so a load costs no copy and no time proportional to the file. A
user's file is read into memory instead (once, never two copies at a time) unless ``mmap=True``:
a trainer that saves ``latest.pth`` again truncates and rewrites that very file, which would
change a mapped model's weights under it, or kill the process (SIGBUS) while the file is short.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch

from ..errors import CheckpointError
from . import _formats as formats
from . import _layout as layout
from . import _legacy as legacy_format

__all__ = ["Checkpoint", "StateDict", "read_checkpoint", "read_state_dict", "read_with_layout"]

StateDict = dict[str, torch.Tensor]
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_CLASSES_KEY = "classes"


class Checkpoint(NamedTuple):
    """A checkpoint's state dict, and the class names saved beside it, if any."""

    state: StateDict
    # A training checkpoint's "classes" entry next to its weights (a list of strings, as
    # torchvision's ImageFolder.classes that examples/finetune.py saves): the names of fc's
    # outputs, in order. None when the file has none.
    classes: list[str] | None


def read_state_dict(path: Path, *, mmap: bool = False) -> StateDict:
    """The checkpoint at ``path`` as a flat state dict of CPU tensors.

    ``mmap=False``: the tensors are read into memory, so later changes to the file do not
    reach them. ``mmap=True``: they are copy-on-write views of the file (no copy, no read until
    used), as with ``torch.load(mmap=True)``: rewriting the file in place changes them, and
    truncating it makes their next use crash the process (SIGBUS).

    Training checkpoints (``{"state_dict": ...}`` and the like) and DDP ``module.`` prefixes are
    unwrapped. Anything but tensors in plain containers is refused (``weights_only=True``).
    """
    return _read(path, mmap=mmap)[0].state


def read_checkpoint(path: Path, *, mmap: bool = False) -> Checkpoint:
    """:func:`read_state_dict`, with the class names the file stores beside the weights."""
    return _read(path, mmap=mmap)[0]


def read_with_layout(path: Path) -> tuple[Checkpoint, bytes | None]:
    """The checkpoint at ``path``, mapped (:func:`read_state_dict` with ``mmap=True``), and the
    layout of its tensors in the file, for :func:`map_layout` to map them again without parsing
    (None where the file cannot be described: a zip file, one read whole, or one that stores
    class names, which a layout would not keep)."""
    checkpoint, offsets = _read(path, mmap=True)
    if not offsets or checkpoint.classes is not None:
        return checkpoint, None
    try:
        return checkpoint, layout.describe(checkpoint.state, offsets, path.stat().st_size)
    except KeyError:  # a tensor not mapped from the file (not describable): parse each time
        return checkpoint, None


def _read(path: Path, *, mmap: bool) -> tuple[Checkpoint, dict[int, int]]:
    """The state dict, and where its legacy-format storages lie in the file (else empty)."""
    # weights_only=True always: a checkpoint is data, never code (no fallback, ever).
    name = str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(formats.HEAD_BYTES)
    except OSError as exc:
        msg = f"Could not open checkpoint {name!r}: {exc}."
        raise CheckpointError(msg) from exc
    if not head:
        msg = f"Checkpoint {name!r} is empty (0 bytes): save or download it again."
        raise CheckpointError(msg)
    other = formats.foreign(head)
    if other is not None:
        msg = f"Checkpoint {name!r} is not a PyTorch checkpoint: it looks like {other}."
        raise CheckpointError(msg)
    zipped = head.startswith(formats.ZIP_MAGIC)  # as torch.load decides
    if zipped and formats.is_torchscript(path):
        msg = (
            f"Checkpoint {name!r} is a TorchScript archive (torch.jit.save), not a state dict: "
            "load it with torch.jit.load, or save its state_dict() with torch.save."
        )
        raise CheckpointError(msg)
    offsets: dict[int, int] = {}
    try:
        if zipped:
            # str(path): torch 2.1's mmap wants a str file name, not a Path.
            obj = torch.load(name, map_location="cpu", weights_only=True, mmap=mmap)
        else:  # the same weights-only unpickler, with the storages mapped in place (or read)
            obj, offsets = legacy_format.load(path, mmap=mmap)
    except Exception as exc:
        raise CheckpointError(_failure(name, exc)) from exc
    return _as_state_dict(obj, path), offsets


def _failure(name: str, exc: Exception) -> str:
    refused = formats.refused_global(exc)
    if refused is not None:
        return (
            f"Checkpoint {name!r} is refused for safety: it needs {refused!r}, which "
            "torch.load(weights_only=True) does not allow, as loading it could run code. Only "
            "plain state dicts of tensors are accepted; if you trust the file, allow that "
            "global with torch.serialization.add_safe_globals (torch >= 2.4)."
        )
    if isinstance(exc, legacy_format.FileError):
        return f"Could not load checkpoint {name!r}: {exc}. Save or download it again."
    return f"Could not load checkpoint {name!r} with torch.load(weights_only=True): " + (
        formats.explain(exc) + "."
    )


def _as_state_dict(obj: object, path: Path) -> Checkpoint:
    """Unwrap ``{"state_dict": ...}``-style training checkpoints and DDP ``module.`` prefixes;
    keep the wrapper's ``classes`` if it is a list of strings."""
    where, classes = "", None
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                classes = _classes(obj.get(_CLASSES_KEY))
                obj, where = inner, f" (in its {key!r} entry)"
                break
    if not isinstance(obj, Mapping):
        msg = (
            f"Checkpoint {str(path)!r} is not a state dict (a mapping of names to tensors): "
            f"it holds {_a(obj)}."
        )
        raise CheckpointError(msg)
    others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others:
        first = others[0]
        more = f" (and {len(others) - 1} more entries that are not tensors)" if others[1:] else ""
        msg = (
            f"Checkpoint {str(path)!r} is not a state dict (a mapping of names to tensors): "
            f"its entry {first!r}{where} is {_a(obj[first])}, not a tensor{more}."
        )
        raise CheckpointError(msg)
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return Checkpoint(state, classes)


def _classes(value: object) -> list[str] | None:
    """``value`` as class names if it is a non-empty list (or tuple) of strings, else None."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    return None


def _a(value: object) -> str:
    """``value``'s type for a message: "an int", "a list"."""
    kind = type(value).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"
