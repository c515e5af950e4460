"""Loaded tensors put into a model built on the meta device, converted on the way in.

Checks the state dict against the model before anything is assigned, and reports every
mismatch (shapes, missing and unexpected keys) at once, with the first few named.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import CheckpointError
from ._reader import StateDict

__all__ = ["assign_state_dict", "convert_in_place"]

_MAX_LISTED = 5


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
    target: str = "this architecture",
    hint: str = "Check that the checkpoint was saved from the same model name (and num_classes).",
) -> None:
    """Put ``state``'s tensors into ``model`` (built on the meta device) without copying them.

    ``new_head``: the checkpoint's ``fc`` is dropped and ``model.fc`` freshly initialised.
    A missing ``num_batches_tracked`` (older checkpoints) is filled with zeros.
    ``dtype``/``device``: weights converted on the way in (``state``'s entries are replaced).
    ``target`` names the model in a mismatch's message, ``hint`` says what to do about it.
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
        msg = f"Checkpoint {source!r} does not fit {target}: {'; '.join(problems)}."
        msg += f" {hint}" if hint else ""
        raise CheckpointError(msg)
    model.load_state_dict(state, strict=not new_head, assign=True)
    if new_head:
        fc = model.fc
        if not isinstance(fc, nn.Linear):  # pragma: no cover - torchvision's ResNet always has one
            msg = "model.fc is not a Linear layer"
            raise CheckpointError(msg)
        model.fc = nn.Linear(fc.in_features, fc.out_features, device=device, dtype=dtype)
