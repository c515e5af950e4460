"""Architectures on torchvision's ResNet, ``get_model`` and the 16 generated entrypoints."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from . import cache, loading
from .channels import RGB, input_conv
from .docs import docstring
from .errors import InvalidInputError
from .features import FeatureExtractor
from .options import ModelOptions
from .registry import Architecture, get_weights, list_models

__all__ = ["build_model", "entrypoints", "get_model"]

_BLOCKS = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}
_IMAGENET_CLASSES = 1000


def build_model(
    arch: Architecture, *, num_classes: int = _IMAGENET_CLASSES, in_chans: int = RGB, **kwargs: Any
) -> ResNet:
    """A torchvision ResNet of configuration ``arch`` (random init unless built on meta)."""
    model = ResNet(
        _BLOCKS[arch.block],
        list(arch.layers),
        num_classes=num_classes,
        groups=arch.groups,
        width_per_group=arch.width_per_group,
        **kwargs,
    )
    if in_chans != RGB:
        model.conv1 = input_conv(model.conv1, in_chans)
    return model


def checkpoint_file(
    name: str,
    checkpoint_path: str | os.PathLike[str] | None,
    *,
    progress: bool,
    check_hash: bool,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The file to load: the cache's verified, memory-mappable file for the model or a URL, or
    a local ``checkpoint_path`` as it is (read in place, never copied)."""
    text = None if checkpoint_path is None else os.fspath(checkpoint_path)
    if text is None or text.startswith(("http://", "https://")):
        return cache.loadable(
            text or name, progress=progress, check_hash=check_hash, cache_dir=cache_dir
        )
    path = Path(text).expanduser()
    if not path.is_file():
        msg = f"checkpoint_path {text!r} is not a file (nor an http(s) URL)."
        raise InvalidInputError(msg)
    return path


@overload
def get_model(name: str, *, features_only: Literal[True], **kwargs: Any) -> FeatureExtractor: ...
@overload
def get_model(name: str, *, features_only: Literal[False] = ..., **kwargs: Any) -> ResNet: ...
@overload
def get_model(
    name: str, *, features_only: bool, **kwargs: Any
) -> ResNet | FeatureExtractor: ...  # a flag known only at run time
def get_model(
    name: str,
    *,
    pretrained: bool = True,
    progress: bool = True,
    num_classes: int = _IMAGENET_CLASSES,
    checkpoint_path: str | os.PathLike[str] | None = None,
    check_hash: bool = True,
    **kwargs: Any,
) -> ResNet | FeatureExtractor:
    """Model ``name`` as a torchvision ResNet with its released weights (``pretrained=True``).

    ``checkpoint_path`` (a local file or an http(s) URL) loads that state dict instead of the
    registered file, whatever ``pretrained`` says. ``features_only``/``out_indices``,
    ``in_chans``, ``dtype`` and ``device``: see the README; other keywords go to torchvision's
    ResNet.
    """
    weights = get_weights(name)
    if num_classes < 1:
        msg = f"num_classes must be a positive integer, got {num_classes!r}."
        raise InvalidInputError(msg)
    opts = ModelOptions.pop_from(kwargs)
    if not pretrained and checkpoint_path is None:
        with torch.device(opts.device or "cpu"):
            model = build_model(
                weights.arch, num_classes=num_classes, in_chans=opts.in_chans, **kwargs
            )
        return opts.finish(model.to(dtype=opts.dtype))
    path = checkpoint_file(name, checkpoint_path, progress=progress, check_hash=check_hash)
    state = loading.read_state_dict(path)
    opts.adapt_state(state)
    # Built on the meta device: no memory allocated and no random init that would be discarded;
    # assign=True then makes the loaded (memory-mapped) tensors the parameters themselves.
    with torch.device("meta"):
        model = build_model(weights.arch, num_classes=num_classes, in_chans=opts.in_chans, **kwargs)
    fc = state.get("fc.weight")
    new_head = num_classes != _IMAGENET_CLASSES and (fc is None or fc.shape[0] != num_classes)
    loading.assign_state_dict(
        model,
        state,
        source=str(checkpoint_path or path),
        new_head=new_head,
        dtype=opts.dtype,
        device=opts.device,
    )
    return opts.finish(model)


def _make_entrypoint(name: str) -> Callable[..., ResNet]:
    def entrypoint(
        *,
        pretrained: bool = True,
        progress: bool = True,
        num_classes: int = _IMAGENET_CLASSES,
        checkpoint_path: str | os.PathLike[str] | None = None,
        check_hash: bool = True,
        **kwargs: Any,
    ) -> ResNet:
        # Typed for the common case; features_only=True returns get_model's FeatureExtractor.
        model: ResNet = get_model(
            name,
            pretrained=pretrained,
            progress=progress,
            num_classes=num_classes,
            checkpoint_path=checkpoint_path,
            check_hash=check_hash,
            **kwargs,
        )
        return model

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = docstring(get_weights(name))
    return entrypoint


def entrypoints() -> dict[str, Callable[..., ResNet]]:
    """The 16 entrypoint functions, generated from the registry, by name."""
    return dict(_ENTRYPOINTS)


_ENTRYPOINTS = {name: _make_entrypoint(name) for name in list_models()}
globals().update(_ENTRYPOINTS)
