"""What ``Classifier`` methods accept as "images": a sequence of inputs, or one input alone.

One path (``str`` or ``os.PathLike``), PIL image, tar member or CHW tensor is a batch of one,
so ``predict("cat.jpg")`` is ``predict(["cat.jpg"])`` (a list of one result), never a batch of
one-letter paths. An NCHW tensor is a batch of N images. Anything else must be a sequence.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from PIL import Image

from ..errors import InvalidInputError
from ._pipeline import ImageInput
from ._tars import TarMember

__all__ = ["Images", "as_batch", "labels_for"]

# What the methods take: inputs, or one input.
Images = Sequence[ImageInput] | ImageInput
_CHW, _NCHW = 3, 4


def as_batch(images: Images) -> Sequence[ImageInput]:
    """``images`` as a sequence of inputs (one input alone: a sequence of one)."""
    if isinstance(images, (str, os.PathLike, Image.Image, TarMember)):
        return [images]
    if isinstance(images, torch.Tensor):
        if images.ndim == _CHW:
            return [images]
        if images.ndim == _NCHW:
            return images  # type: ignore[return-value]  # indexing gives CHW images
        msg = (
            f"A tensor of shape {tuple(images.shape)} is neither one image (CHW: 1 or 3 "
            "channels, height, width) nor a batch of them (NCHW): reshape it, or pass a list."
        )
        raise InvalidInputError(msg)
    if isinstance(images, (bytes, bytearray, memoryview)):
        msg = (
            "Image bytes are not an input: pass a path, or a PIL image "
            "(PIL.Image.open(io.BytesIO(data)))."
        )
        raise InvalidInputError(msg)
    if not hasattr(images, "__getitem__") or not hasattr(images, "__len__"):
        kind = type(images).__name__
        msg = (
            f"images must be a list (or other sequence) of paths, PIL images or CHW tensors, or "
            f"one of them; got {kind!r}. A generator or iterator: pass list(...) of it."
        )
        raise InvalidInputError(msg)
    return images


def labels_for(
    num_classes: int, *, given: Sequence[str] | None, saved: list[str] | None, imagenet: list[str]
) -> tuple[list[str], str]:
    """The name of each of ``num_classes`` outputs, and where they come from (for the log).

    ``given`` (``labels=``, ``--labels FILE``) wins; then the checkpoint's own ``saved``
    class names; then ImageNet's names for a 1000-class head; else the class indices.
    """
    if given is not None:
        labels = [str(label) for label in given]
        if len(labels) != num_classes:
            msg = (
                f"labels has {len(labels)} names, but the model has {num_classes} classes: "
                "give one label per class, in the order of the model's outputs."
            )
            raise InvalidInputError(msg)
        return labels, "the labels given"
    if saved is not None and len(saved) == num_classes:
        return list(saved), "the checkpoint's 'classes'"
    if num_classes == len(imagenet):
        return imagenet, "ImageNet's classes"
    return [str(i) for i in range(num_classes)], "class indices (no labels given)"
