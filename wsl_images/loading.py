"""State dicts from verified files: ``weights_only`` always, zero-copy where it is safe.

This module only reads. The file it gets comes from the cache (verified) or from the user
(``checkpoint_path``). Files of the cache are memory-mapped where they lie, since the cache only
ever replaces them by rename: zip files by ``torch.load(mmap=True)`` (torch >= 2.1), legacy
(pre-1.6) files, the released ones, by :mod:`.legacy_format`. Tensors are views of the page
cache, so a load costs no copy and no time proportional to the file. A user's file is read
into memory instead (once, never two copies at a time) unless ``mmap=True``: a trainer that
saves ``latest.pth`` again truncates and rewrites that very file, which would change a mapped
model's weights under it, or kill the process (SIGBUS) while the file is short.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from . import formats, layout, legacy_format
from .errors import CheckpointError

__all__ = [
    "assign_state_dict",
    "convert_in_place",
    "read_cached_state_dict",
    "read_state_dict",
]

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_MAX_LISTED = 5


def read_state_dict(path: Path, *, mmap: bool = False) -> StateDict:
    """The checkpoint at ``path`` as a flat state dict of CPU tensors.

    ``mmap=False``: the tensors are read into memory, so later changes to the file do not
    reach them. ``mmap=True``: they are copy-on-write views of the file (no copy, no read until
    used), as with ``torch.load(mmap=True)``: rewriting the file in place changes them, and
    truncating it makes their next use crash the process (SIGBUS).

    Training checkpoints (``{"state_dict": ...}`` and the like) and DDP ``module.`` prefixes are
    unwrapped. Anything but tensors in plain containers is refused (``weights_only=True``).
    """
    return _read(path, mmap=mmap)[0]


def read_cached_state_dict(path: Path) -> StateDict:
    """:func:`read_state_dict` for a verified file of the cache, mapped, which keeps its layout.

    The first load parses the file and gives the cache the layout of its tensors (legacy format);
    later loads map the tensors by that layout and parse nothing.
    """
    from . import cache

    kept = cache.load_layout(path)  # hash-checked, tied to this file's sha256
    if kept is not None:
        try:
            return layout.map_tensors(path, kept)
        except ValueError as exc:  # intact, yet not this file's: from a future version?
            log.warning("Not using the layout kept for %s (%s): parsing the file", path, exc)
    state, offsets = _read(path, mmap=True)
    if offsets:
        try:
            data = layout.describe(state, offsets, path.stat().st_size)
        except KeyError:  # a tensor not mapped from the file (not describable): parse each time
            return state
        cache.keep_layout(path, data)
    return state


def _read(path: Path, *, mmap: bool) -> tuple[StateDict, dict[int, int]]:
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


def _as_state_dict(obj: object, path: Path) -> StateDict:
    """Unwrap ``{"state_dict": ...}``-style training checkpoints and DDP ``module.`` prefixes."""
    where = ""
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
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
    return state


def _a(value: object) -> str:
    """``value``'s type for a message: "an int", "a list"."""
    kind = type(value).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


def _describe(keys: list[str], state: Mapping[str, torch.Tensor] | None = None) -> str:
    shown = ", ".join(
        f"{k} {tuple(state[k].shape)}" if state is not None else k for k in keys[:_MAX_LISTED]
    )
    more = f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return shown + more


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def convert_in_place(
    state: StateDict, *, dtype: torch.dtype | None = None, device: torch.device | None = None
) -> None:
    """Cast floating tensors to ``dtype`` and move all to ``device``, one tensor at a time.

    Each entry is replaced as soon as its converted copy exists, so the source tensor is freed
    (or, memory-mapped, was never anonymous memory): the load never holds a second full copy.
    """
    for key, value in state.items():
        cast = dtype if dtype is not None and value.is_floating_point() else None
        state[key] = value.to(device=device, dtype=cast)


def assign_state_dict(
    model: nn.Module,
    state: StateDict,
    *,
    source: str,
    new_head: bool,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> None:
    """Put ``state``'s tensors into ``model`` (built on the meta device) without copying them.

    ``new_head``: the checkpoint's ``fc`` is dropped and ``model.fc`` freshly initialised.
    A missing ``num_batches_tracked`` (older checkpoints) is filled with zeros.
    ``dtype``/``device``: weights converted on the way in (``state``'s entries are replaced).
    """
    if dtype is not None or device is not None:
        convert_in_place(state, dtype=dtype, device=device)
    expected = model.state_dict()
    if new_head:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        expected = {k: v for k, v in expected.items() if not k.startswith("fc.")}
    # BN step counters are bookkeeping, not weights: fill them where the checkpoint predates
    # them, drop them where the model has none (e.g. norm_layer=FrozenBatchNorm2d).
    state = {k: v for k, v in state.items() if not _is_counter(k) or k in expected}
    for key in expected:
        if _is_counter(key) and key not in state:
            state[key] = torch.zeros((), dtype=torch.long, device=device)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        problems = []
        if wrong:
            shapes = ", ".join(
                f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                for k in wrong[:_MAX_LISTED]
            )
            problems.append(f"shape mismatches ({len(wrong)}): {shapes}")
        if missing:
            problems.append(f"missing keys ({len(missing)}): {_describe(missing)}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {_describe(unexpected, state)}")
        msg = (
            f"Checkpoint {source!r} does not fit this architecture: {'; '.join(problems)}. "
            "Check that the checkpoint was saved from the same model name (and num_classes)."
        )
        raise CheckpointError(msg)
    model.load_state_dict(state, strict=not new_head, assign=True)
    if new_head:
        fc = model.fc
        if not isinstance(fc, nn.Linear):  # pragma: no cover - torchvision's ResNet always has one
            msg = "model.fc is not a Linear layer"
            raise CheckpointError(msg)
        model.fc = nn.Linear(fc.in_features, fc.out_features, device=device, dtype=dtype)
