"""A model built on the meta device without running torchvision's initialisation.

A model built on the meta device holds no data, yet torchvision's init loop still runs
``kaiming_normal_`` and friends, which on meta go through torch's Python reference kernels:
0.1-0.3 s for a ResNeXt-101, on every load, for values the checkpoint replaces anyway.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["meta_skeleton"]

log = logging.getLogger(__name__)


def _meta_constructors() -> frozenset[Callable[..., Any]] | None:
    """What ``torch.device("meta")`` places on meta: torch's private list, or None if this
    torch has it no more (models are then built under ``torch.device("meta")`` itself, a
    little slower)."""
    try:
        from torch.utils._device import _device_constructors

        return frozenset(_device_constructors())
    except Exception as exc:  # any change of a private API: the public way
        log.debug("torch.utils._device._device_constructors unusable (%s)", exc)
        return None


class _MetaSkeleton(TorchFunctionMode):
    """Within it, a model is built on the meta device, and in-place init of meta tensors returns
    at once.

    One mode, not ``torch.device("meta")`` plus another: every torch call of the construction
    passes through each mode, and the second one cost a third of the build time. A mode (not a
    patch of ``torch.nn.init``), so that it is scoped to this thread and block.
    """

    _INIT = frozenset(
        {
            torch.Tensor.normal_,
            torch.Tensor.uniform_,
            torch.Tensor.fill_,
            torch.Tensor.zero_,
            # The init functions themselves: skipped whole rather than op by op.
            torch.nn.init.kaiming_normal_,
            torch.nn.init.kaiming_uniform_,
            torch.nn.init.constant_,
            torch.nn.init.ones_,
            torch.nn.init.zeros_,
            torch.nn.init.normal_,
            torch.nn.init.uniform_,
        }
    )
    _CONSTRUCTORS = _meta_constructors()

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in self._INIT and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        if self._CONSTRUCTORS and func in self._CONSTRUCTORS and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def meta_skeleton() -> contextlib.AbstractContextManager[Any]:
    """The context a model is built in, on meta, without init."""
    if _MetaSkeleton._CONSTRUCTORS:
        return _MetaSkeleton()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.device("meta"))  # outer: the mode skips init on what it makes
    stack.enter_context(_MetaSkeleton())
    return stack
