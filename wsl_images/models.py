"""Architectures on torchvision's ResNet, ``get_model`` and the 16 generated entrypoints.

The face of the zoo: a model name (or alias) becomes a torchvision ResNet holding its weights,
read from a verified file of the cache (mapped, with its kept layout) or from the user's file.
The keywords of ``get_model`` and the entrypoints are explicit, typed and keyword-only (the docs
list them from :data:`wsl_images.zoo.KEYWORDS`); overloads make the return type follow
``features_only``. ``**kwargs`` is only what goes to torchvision's ResNet. torch is imported
when a model is built, so the entrypoints (hubconf, ``torch.hub.list``) cost nothing to list.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, overload

from .errors import CheckpointError, InvalidInputError, UnknownModelError
from .zoo import (
    DEFAULT_MODEL,
    Architecture,
    Weights,
    docstring,
    get_weights,
    list_models,
    released_files,
)

if TYPE_CHECKING:
    import torch
    from torchvision.models.resnet import ResNet

    from .cache import BadFile, CacheEntry
    from .checkpoints import Checkpoint, StateDict
    from .zoo import FeatureExtractor, ModelOptions

__all__ = [
    "Entrypoint",
    "TrainedModel",
    "build_model",
    "cache_files",
    "checkpoint_file",
    "clear_cache",
    "download",
    "entrypoints",
    "get_model",
    "load_trained",
    "scan_cache",
    "source_sha256",
    "verify_cache",
]

_IMAGENET_CLASSES = 1000
_RGB = 3
PathLike = str | os.PathLike[str]
log = logging.getLogger(__name__)


def build_model(
    arch: Architecture, *, num_classes: int = _IMAGENET_CLASSES, in_chans: int = _RGB, **kwargs: Any
) -> ResNet:
    """A torchvision ResNet of configuration ``arch`` (random init unless built on meta)."""
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    from .zoo import input_conv

    block = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}[arch.block]
    model = ResNet(
        block,
        list(arch.layers),
        num_classes=num_classes,
        groups=arch.groups,
        width_per_group=arch.width_per_group,
        **kwargs,
    )
    if in_chans != _RGB:
        model.conv1 = input_conv(model.conv1, in_chans)
    return model


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

    url, label, released = _source(text or name)
    path = cache.loadable(
        url,
        progress=progress,
        check_hash=check_hash,
        cache_dir=cache_dir,
        label=label,
        released=released,
    )
    return path, True


# --- The cache by model name: the cache knows files, the zoo knows what they are. ---


def download(
    name_or_url: str,
    *,
    progress: bool = True,
    check_hash: bool = True,
    cache_dir: PathLike | None = None,
) -> Path:
    """The verified cached file of a model (name or alias) or an http(s) URL, fetched if
    needed (from ``$WSL_IMAGES_MIRROR`` for a model when it is set)."""
    from . import cache

    url, label, released = _source(name_or_url)
    return cache.download_url(
        url,
        progress=progress,
        check_hash=check_hash,
        cache_dir=cache_dir,
        label=label,
        released=released,
    )


def source_sha256(
    name_or_url: str, *, check_hash: bool = True, cache_dir: PathLike | None = None
) -> str:
    """The full sha256 of a model's (or URL's) verified cached file, fetched if needed: the
    checkpoint's identity, from its record (a stat)."""
    from . import cache

    url, label, released = _source(name_or_url)
    return cache.source_sha256(
        url,
        progress=False,
        check_hash=check_hash,
        cache_dir=cache_dir,
        label=label,
        released=released,
    )


def scan_cache(cache_dir: PathLike | None = None) -> list[CacheEntry]:
    """Every file wsl-images knows in the cache folder (a released model's listed under its
    name), sorted by name, with the files derived from each."""
    from . import cache

    return cache.scan_cache(cache_dir, known=released_files())


def verify_cache(
    names: Iterable[str] | None = None, cache_dir: PathLike | None = None
) -> list[BadFile]:
    """Hash the files of these models, aliases or cache file names (default: all wsl-images
    knows) in full, with their derived files; return the bad ones (see ``cache.verify_cache``)."""
    from . import cache

    files = cache_files(names, cache_dir)
    return cache.verify_cache(files, cache_dir, known=released_files())


def clear_cache(
    names: Iterable[str] | None = None, cache_dir: PathLike | None = None
) -> list[Path]:
    """Remove the files of these models, aliases or cache file names (default: all wsl-images
    knows) with their records and derived files; return what was removed."""
    from . import cache

    files = cache_files(names, cache_dir)
    return cache.clear_cache(files, cache_dir, known=released_files())


def _source(name_or_url: str) -> tuple[str, str, bool]:
    """(URL to fetch, what messages call it, whether its name's sha256 prefix is known to be
    right) for a model name, an alias or a URL."""
    from . import cache

    if name_or_url.startswith(("http://", "https://")):
        released = cache.filename_from_url(name_or_url) in released_files()
        return name_or_url, name_or_url, released
    weights = get_weights(name_or_url)
    return cache.mirror_url(weights.url), weights.name, True


def cache_files(names: Iterable[str] | None, cache_dir: PathLike | None = None) -> list[str] | None:
    """The cache file names meant by model names, aliases or file names in the cache (None for
    None: all); :class:`UnknownModelError` for a name that is neither."""
    if names is None:
        return None
    from . import cache

    folder = cache.get_cache_dir(cache_dir)
    files = []
    for name in names:
        plain = "/" not in name and "\\" not in name
        if plain and ((folder / name).is_file() or cache.derived_paths(folder / name)):
            files.append(name)  # a cached file, or a local file's stand-in (derived data only)
            continue
        try:
            files.append(get_weights(name).filename)
        except UnknownModelError as exc:
            msg = f"{exc} (Or give the name of a file in the cache {str(folder)!r}.)"
            raise UnknownModelError(msg) from None
    return files


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
    import torch

    from .zoo import ModelOptions

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
    state = _read(path, cached, mmap).state
    fc = state.get("fc.weight")
    new_head = num_classes != _IMAGENET_CLASSES and (fc is None or fc.shape[0] != num_classes)
    return _build(weights, state, opts, num_classes, source, kwargs, new_head=new_head)


def _read(path: Path, cached: bool, mmap: bool) -> Checkpoint:
    from .checkpoints import read_checkpoint

    return _cached_checkpoint(path) if cached else read_checkpoint(path, mmap=mmap)


def _build(
    weights: Weights,
    state: StateDict,
    opts: ModelOptions,
    num_classes: int,
    source: str,
    kwargs: dict[str, Any],
    *,
    new_head: bool,
    target: str | None = None,
    hint: str | None = None,
) -> ResNet:
    """The ResNet of ``weights.arch`` holding ``state``; a mismatch names ``target`` (default:
    the model) and says what to do (default: which model the shapes fit, if another one)."""
    from .checkpoints import assign_state_dict
    from .zoo import meta_skeleton

    opts.adapt_state(state)
    # Built on the meta device: no memory allocated and no random init that would be discarded;
    # assign=True then makes the loaded (memory-mapped) tensors the parameters themselves.
    with meta_skeleton():
        model = build_model(weights.arch, num_classes=num_classes, in_chans=opts.in_chans, **kwargs)
    target = target or f"model {weights.name!r} ({weights.arch.title}, {num_classes} classes)"
    try:
        assign_state_dict(
            model, state, source=source, new_head=new_head, dtype=opts.dtype,
            device=opts.device, target=target, hint="",
        )  # fmt: skip
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} {hint or _fit_hint(state, weights, num_classes)}") from None
    return model


def _fit_hint(state: StateDict, weights: Weights, num_classes: int) -> str:
    """What to do about a checkpoint that does not fit ``weights``: the models its shapes fit,
    or the number of classes its fc has."""
    from .zoo import architecture_of, describe_shapes, models_for

    shapes = {k: tuple(v.shape) for k, v in state.items()}
    arch = architecture_of(shapes)
    fc = shapes.get("fc.weight")
    if arch == weights.arch and fc is not None and fc[0] != num_classes:
        return f"Its fc has {fc[0]} outputs: pass num_classes={fc[0]} (--num-classes {fc[0]})."
    if arch is None or arch == weights.arch:
        return (
            f"Its shapes ({describe_shapes(shapes)}) fit no other architecture of the zoo: "
            "give the model it was saved from."
        )
    names = models_for(arch)
    return (
        f"Its shapes are those of {arch.title} ({', '.join(names)}): give that model name "
        f"(e.g. --model {names[0]}), or leave it out (classify, embed, Classifier) to have it "
        "inferred."
    )


def _cached_checkpoint(path: Path) -> Checkpoint:
    """The state dict of a verified file of the cache, mapped; its layout is kept in the cache.

    The first load parses the file and gives the cache the layout of its tensors (legacy format);
    later loads map the tensors by that layout and parse nothing.
    """
    from . import cache
    from .checkpoints import Checkpoint, map_layout, read_with_layout

    kept = cache.load_derived(path, cache.LAYOUT)  # hash-checked, tied to this file's sha256
    if kept is not None:
        try:
            return Checkpoint(map_layout(path, kept), None)
        except ValueError as exc:  # intact, yet not this file's: from a future version?
            log.warning("Not using the layout kept for %s (%s): parsing the file", path, exc)
    checkpoint, layout = read_with_layout(path)
    if layout is not None:
        cache.keep_derived(path, cache.LAYOUT, layout)
    return checkpoint


@dataclass(frozen=True)
class TrainedModel:
    """A model as :class:`wsl_images.Classifier` runs it, and what its checkpoint said."""

    model: ResNet
    weights: Weights  # the registry row whose architecture and preprocessing ``model`` has
    num_classes: int  # outputs of ``model.fc``
    classes: list[str] | None  # fc's class names saved in the checkpoint ("classes"), if any
    head: bool  # False: the checkpoint has no ``fc`` (a backbone): ``model.fc`` is random


def load_trained(
    name: str | None,
    *,
    checkpoint_path: PathLike | None = None,
    num_classes: int | None = None,
    check_hash: bool = True,
    mmap: bool = False,
    progress: bool = True,
    cache_dir: PathLike | None = None,
) -> TrainedModel:
    """Model ``name`` with its released weights, or with a checkpoint of any head.

    With ``checkpoint_path``: ``name`` None infers the architecture from the checkpoint's
    shapes (logged at INFO; the preferred model of that architecture names it, see
    :func:`wsl_images.zoo.models_for`); ``num_classes`` None takes the outputs of its ``fc``
    (a fine-tuned head), and a checkpoint without ``fc`` gives a backbone (``head`` False).
    A state dict is read once: the shapes are looked at before anything is built.
    """
    if num_classes is not None and num_classes < 1:
        msg = f"num_classes must be a positive integer, got {num_classes!r}."
        raise InvalidInputError(msg)
    if checkpoint_path is None:
        weights = get_weights(name or DEFAULT_MODEL)
        if num_classes not in (None, _IMAGENET_CLASSES):
            msg = (
                f"num_classes={num_classes} needs a checkpoint whose fc has {num_classes} "
                f"outputs (checkpoint_path, --checkpoint): the released {weights.name} weights "
                f"classify the {_IMAGENET_CLASSES} ImageNet classes."
            )
            raise InvalidInputError(msg)
        model = get_model(
            weights.name, check_hash=check_hash, progress=progress, cache_dir=cache_dir
        )
        return TrainedModel(model, weights, _IMAGENET_CLASSES, None, head=True)
    from .zoo import ModelOptions

    path, cached = checkpoint_file(
        name or DEFAULT_MODEL, checkpoint_path, progress=progress, check_hash=check_hash,
        cache_dir=cache_dir,
    )  # fmt: skip
    source = os.fspath(checkpoint_path)
    checkpoint = _read(path, cached, mmap)
    weights, target, hint = _architecture(name, checkpoint.state, source)
    fc = checkpoint.state.get("fc.weight")
    outputs = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else None
    if num_classes is not None and outputs is not None and num_classes != outputs:
        msg = (
            f"num_classes={num_classes} (--num-classes), but the fc of checkpoint {source!r} "
            f"has {outputs} outputs: drop num_classes to use the checkpoint's."
        )
        raise InvalidInputError(msg)
    classes = num_classes or outputs or _IMAGENET_CLASSES
    if num_classes is None and outputs not in (None, _IMAGENET_CLASSES):
        log.info("Checkpoint %s: its fc has %d outputs (num_classes=%d)", source, classes, classes)
    model = _build(
        weights, checkpoint.state, ModelOptions(), classes, source, {}, new_head=fc is None,
        target=target, hint=hint,
    )  # fmt: skip
    return TrainedModel(model, weights, classes, checkpoint.classes, head=fc is not None)


def _architecture(
    name: str | None, state: StateDict, source: str
) -> tuple[Weights, str | None, str | None]:
    """The registry row to build for ``state`` (``name``'s, or inferred from the shapes when
    ``name`` is None), and how a mismatch message names it and what it advises (None: the
    usual)."""
    from .zoo import architecture_of, describe_shapes, models_for

    if name is not None:
        return get_weights(name), None, None
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    arch = architecture_of(shapes)
    if arch is None:
        weights = get_weights(DEFAULT_MODEL)
        target = (
            f"the default model {weights.name!r} ({weights.arch.title}), tried because no model "
            "name was given and its shapes fit none of the zoo's architectures (it has "
            f"{describe_shapes(shapes)})"
        )
        hint = (
            "Give the model it was saved from: --model NAME on the command line, "
            "Classifier(NAME, ...) in Python (`wsl-images list` shows the names)."
        )
        return weights, target, hint
    weights = get_weights(models_for(arch)[0])
    log.info(
        "Checkpoint %s: no model name given; its shapes are those of %s: built as %s "
        "(give --model or the name to choose another)",
        source, arch.title, weights.name,
    )  # fmt: skip
    return weights, None, None


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
