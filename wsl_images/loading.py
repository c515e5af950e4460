"""State-dict loading: ``weights_only`` always, zero-copy wherever the file format allows.

The released 2019 files are in torch's legacy (non-zip) format, which ``torch.load(mmap=True)``
refuses. A legacy file in the cache is therefore converted once, after the cache has verified its
hash, into a safetensors file beside it; every later load memory-maps that file, so weights are
never copied and no pickle is ever read again. Zip-format files are memory-mapped directly.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ._files import open_temp, publish
from .errors import CheckpointError

__all__ = ["assign_state_dict", "convert_in_place", "converted_path", "load_state_dict"]

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
_CONVERTED_SUFFIX = ".safetensors"
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_MAX_LISTED = 5


def converted_path(path: Path) -> Path:
    """Where the memory-mappable copy of a legacy-format cached file lives."""
    return path.with_name(path.name + _CONVERTED_SUFFIX)


def load_state_dict(path: Path, *, convert: bool = False, source_sha256: str = "") -> StateDict:
    """Load a checkpoint as a flat state dict of CPU tensors.

    ``convert=True`` (files in the cache, already hash-checked) keeps a safetensors copy of a
    legacy-format file beside it and loads that copy, memory-mapped, from then on.
    ``source_sha256`` (the verified hash or its prefix) ties that copy to its source file.
    """
    if path.name.endswith(_CONVERTED_SUFFIX):
        return load_file(path)
    if zipfile.is_zipfile(path):
        return _torch_load(path, mmap=True)
    if not convert:
        return _torch_load(path, mmap=False)
    converted = converted_path(path)
    if _converted_matches(converted, path, source_sha256):
        return load_file(converted)
    state = _torch_load(path, mmap=False)
    _write_converted(state, converted, path, source_sha256)
    return state


def _torch_load(path: Path, *, mmap: bool) -> StateDict:
    # weights_only=True always: a checkpoint is data, never code (no fallback, ever).
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        msg = (
            f"Could not load checkpoint {str(path)!r} with torch.load(weights_only=True): {exc}. "
            "Only plain state dicts of tensors are accepted; a file that needs arbitrary "
            "unpickling is refused for safety."
        )
        raise CheckpointError(msg) from exc
    return _as_state_dict(obj, path)


def _as_state_dict(obj: object, path: Path) -> StateDict:
    """Unwrap ``{"state_dict": ...}``-style training checkpoints and DDP ``module.`` prefixes."""
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        msg = (
            f"Checkpoint {str(path)!r} is not a state dict (a mapping of names to tensors); "
            f"it holds a {type(obj).__name__}."
        )
        raise CheckpointError(msg)
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _source_tag(source: Path, sha256: str) -> dict[str, str]:
    return {"source": source.name, "source_size": str(source.stat().st_size), "sha256": sha256}


def _converted_matches(converted: Path, source: Path, sha256: str) -> bool:
    if not converted.is_file():
        return False
    try:
        with safe_open(converted, framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception:  # an unreadable copy is simply rebuilt
        log.warning("Ignoring unreadable converted checkpoint %s", converted)
        return False
    return metadata == _source_tag(source, sha256)


def _write_converted(state: StateDict, converted: Path, source: Path, sha256: str) -> None:
    """Write the safetensors copy atomically; a failure only costs speed, never correctness.

    Uses the cache's per-process temp files, so a conversion killed midway is cleaned up like
    an interrupted download, and a planted symlink is never written through.
    """
    try:
        fd, tmp = open_temp(converted)
    except OSError as exc:
        log.warning("Could not write %s (%s): later loads will not be zero-copy", converted, exc)
        return
    try:
        contiguous = {k: v.contiguous() for k, v in state.items()}
        save_file(contiguous, tmp, metadata=_source_tag(source, sha256))
        publish(fd, tmp, converted)
    except OSError as exc:
        log.warning("Could not write %s (%s): later loads will not be zero-copy", converted, exc)
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)


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
