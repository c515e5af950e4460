"""Architectures on torchvision's ResNet, ``get_model`` and the 16 generated entrypoints.

The keywords of ``get_model`` and the entrypoints are explicit, typed and keyword-only (the docs
list them from :data:`wsl_images.docs.KEYWORDS`); overloads make the return type follow
``features_only``. ``**kwargs`` is only what goes to torchvision's ResNet.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, cast, overload

import torch
from torch.overrides import TorchFunctionMode
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .channels import RGB, input_conv
from .docs import docstring
from .errors import InvalidInputError
from .features import FeatureExtractor
from .options import ModelOptions
from .registry import Architecture, Weights, get_weights, list_models

__all__ = ["Entrypoint", "build_model", "entrypoints", "get_model"]

_BLOCKS = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}
_IMAGENET_CLASSES = 1000
PathLike = str | os.PathLike[str]
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


class _MetaSkeleton(TorchFunctionMode):
    """Within it, a model is built on the meta device, and in-place init of meta tensors returns
    at once.

    A model built on the meta device holds no data, yet torchvision's init loop still runs
    ``kaiming_normal_`` and friends, which on meta go through torch's Python reference kernels:
    0.1-0.3 s for a ResNeXt-101, on every load, for values the checkpoint replaces anyway.
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


def _meta_skeleton() -> contextlib.AbstractContextManager[Any]:
    """The context a model is built in, on meta, without init."""
    if _MetaSkeleton._CONSTRUCTORS:
        return _MetaSkeleton()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.device("meta"))  # outer: the mode skips init on what it makes
    stack.enter_context(_MetaSkeleton())
    return stack


def checkpoint_file(
    name: str,
    checkpoint_path: PathLike | None,
    *,
    progress: bool,
    check_hash: bool,
    cache_dir: PathLike | None = None,
) -> tuple[Path, bool]:
    """The file to load, and whether it is the cache's: the verified cached file for the model
    or a URL, or a local ``checkpoint_path`` as it is (loaded from where it lies, never copied
    into the cache)."""
    text = None if checkpoint_path is None else os.fspath(checkpoint_path)
    if text is not None and not text.startswith(("http://", "https://")):
        path = Path(text).expanduser()
        if not path.is_file():
            msg = f"checkpoint_path {text!r} is not a file (nor an http(s) URL)."
            raise InvalidInputError(msg)
        return path, False
    # Imported here: the cache is needed only when weights are fetched, so a model without
    # weights, or from a local file, never touches it.
    from . import cache

    path = cache.loadable(
        text or name, progress=progress, check_hash=check_hash, cache_dir=cache_dir
    )
    return path, True


# fmt: off
@overload
def get_model(
    name: str, *, pretrained: bool = ..., progress: bool = ..., num_classes: int = ...,
    checkpoint_path: PathLike | None = ..., check_hash: bool = ..., mmap: bool = ...,
    cache_dir: PathLike | None = ..., features_only: Literal[False] = ...,
    out_indices: None = ..., in_chans: int = ...,
    dtype: torch.dtype | None = ..., device: str | torch.device | None = ..., **kwargs: Any,
) -> ResNet: ...
@overload
def get_model(
    name: str, *, pretrained: bool = ..., progress: bool = ..., num_classes: int = ...,
    checkpoint_path: PathLike | None = ..., check_hash: bool = ..., mmap: bool = ...,
    cache_dir: PathLike | None = ..., features_only: Literal[True],
    out_indices: Sequence[int] | None = ..., in_chans: int = ...,
    dtype: torch.dtype | None = ..., device: str | torch.device | None = ..., **kwargs: Any,
) -> FeatureExtractor: ...
@overload
def get_model(  # a features_only flag known only at run time
    name: str, *, pretrained: bool = ..., progress: bool = ..., num_classes: int = ...,
    checkpoint_path: PathLike | None = ..., check_hash: bool = ..., mmap: bool = ...,
    cache_dir: PathLike | None = ..., features_only: bool,
    out_indices: Sequence[int] | None = ..., in_chans: int = ...,
    dtype: torch.dtype | None = ..., device: str | torch.device | None = ..., **kwargs: Any,
) -> ResNet | FeatureExtractor: ...
# fmt: on
def get_model(
    name: str,
    *,
    pretrained: bool = True,
    progress: bool = True,
    num_classes: int = 1000,
    checkpoint_path: str | os.PathLike[str] | None = None,
    check_hash: bool = True,
    mmap: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    in_chans: int = 3,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> ResNet | FeatureExtractor:
    """Model ``name`` (or an alias) as a torchvision ResNet with its released weights.

    ``checkpoint_path`` (a local file or an http(s) URL) loads that state dict instead of the
    registered file, whatever ``pretrained`` says; ``**kwargs`` go to torchvision's ResNet.
    A local file is read into memory; with ``mmap=True`` its tensors are memory-mapped views
    of the file instead (faster, less memory), as with ``torch.load(mmap=True)``: then saving
    the file again in place (``torch.save`` truncates and rewrites it) changes the live
    model's weights, and using them while the file is short kills the process (SIGBUS).
    Downloaded files (the cache's) are always mapped: the cache replaces them only by rename.
    Every keyword is described in the entrypoints' docstrings (``torch.hub.help``).
    """
    weights = get_weights(name)
    if num_classes < 1:
        msg = f"num_classes must be a positive integer, got {num_classes!r}."
        raise InvalidInputError(msg)
    opts = ModelOptions.checked(
        features_only=features_only,
        out_indices=out_indices,
        in_chans=in_chans,
        dtype=dtype,
        device=device,
    )
    if not pretrained and checkpoint_path is None:
        with torch.device(opts.device or "cpu"):
            model = build_model(
                weights.arch, num_classes=num_classes, in_chans=opts.in_chans, **kwargs
            )
        return opts.finish(model.to(dtype=opts.dtype))
    path, cached = checkpoint_file(
        weights.name,  # not an alias: the cache would resolve (and log) it again
        checkpoint_path,
        progress=progress,
        check_hash=check_hash,
        cache_dir=cache_dir,
    )
    source = str(checkpoint_path or path)
    model = _load(weights, path, cached, mmap, opts, num_classes, source, kwargs)
    return opts.finish(model)


def _load(
    weights: Weights,
    path: Path,
    cached: bool,
    mmap: bool,
    opts: ModelOptions,
    num_classes: int,
    source: str,
    kwargs: dict[str, Any],
) -> ResNet:
    """The ResNet of ``weights.arch`` holding the state dict in ``path`` (``cached``: a file of
    the cache, mapped, which keeps its layout; else the user's, read unless ``mmap``)."""
    from . import loading  # only when weights are loaded

    if cached:
        state = loading.read_cached_state_dict(path)
    else:
        state = loading.read_state_dict(path, mmap=mmap)
    opts.adapt_state(state)
    # Built on the meta device: no memory allocated and no random init that would be discarded;
    # assign=True then makes the loaded (memory-mapped) tensors the parameters themselves.
    with _meta_skeleton():
        model = build_model(weights.arch, num_classes=num_classes, in_chans=opts.in_chans, **kwargs)
    fc = state.get("fc.weight")
    new_head = num_classes != _IMAGENET_CLASSES and (fc is None or fc.shape[0] != num_classes)
    loading.assign_state_dict(
        model, state, source=source, new_head=new_head, dtype=opts.dtype, device=opts.device
    )
    return model


class Entrypoint(Protocol):
    """A generated entrypoint, ``resnet50_swsl(...)``: ``get_model(NAME, ...)``, same keywords."""

    __name__: str

    # fmt: off
    @overload
    def __call__(
        self, *, pretrained: bool = ..., progress: bool = ..., num_classes: int = ...,
        checkpoint_path: PathLike | None = ..., check_hash: bool = ..., mmap: bool = ...,
        cache_dir: PathLike | None = ..., features_only: Literal[False] = ...,
        out_indices: None = ..., in_chans: int = ..., dtype: torch.dtype | None = ...,
        device: str | torch.device | None = ..., **kwargs: Any,
    ) -> ResNet: ...
    @overload
    def __call__(
        self, *, pretrained: bool = ..., progress: bool = ..., num_classes: int = ...,
        checkpoint_path: PathLike | None = ..., check_hash: bool = ..., mmap: bool = ...,
        cache_dir: PathLike | None = ..., features_only: Literal[True],
        out_indices: Sequence[int] | None = ..., in_chans: int = ...,
        dtype: torch.dtype | None = ..., device: str | torch.device | None = ..., **kwargs: Any,
    ) -> FeatureExtractor: ...
    @overload
    def __call__(
        self, *, pretrained: bool = ..., progress: bool = ..., num_classes: int = ...,
        checkpoint_path: PathLike | None = ..., check_hash: bool = ..., mmap: bool = ...,
        cache_dir: PathLike | None = ..., features_only: bool,
        out_indices: Sequence[int] | None = ..., in_chans: int = ...,
        dtype: torch.dtype | None = ..., device: str | torch.device | None = ..., **kwargs: Any,
    ) -> ResNet | FeatureExtractor: ...
    # fmt: on


def _make_entrypoint(name: str) -> Entrypoint:
    def entrypoint(
        *,
        pretrained: bool = True,
        progress: bool = True,
        num_classes: int = 1000,
        checkpoint_path: str | os.PathLike[str] | None = None,
        check_hash: bool = True,
        mmap: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        in_chans: int = 3,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> ResNet | FeatureExtractor:
        return get_model(
            name,
            pretrained=pretrained,
            progress=progress,
            num_classes=num_classes,
            checkpoint_path=checkpoint_path,
            check_hash=check_hash,
            mmap=mmap,
            cache_dir=cache_dir,
            features_only=features_only,
            out_indices=out_indices,
            in_chans=in_chans,
            dtype=dtype,
            device=device,
            **kwargs,
        )

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = docstring(get_weights(name))
    return cast(Entrypoint, entrypoint)


def entrypoints() -> dict[str, Entrypoint]:
    """The 16 entrypoint functions, generated from the registry, by name."""
    return dict(_ENTRYPOINTS)


_ENTRYPOINTS = {name: _make_entrypoint(name) for name in list_models()}
globals().update(_ENTRYPOINTS)
