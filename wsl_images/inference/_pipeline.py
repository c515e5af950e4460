"""The input side of batched inference: decode and crop in DataLoader workers, in input order.

Workers turn each input (a path, a member of a tar shard, a PIL image or a CHW tensor) into a
crop (the geometry half of :mod:`wsl_images.zoo._transforms`, from the registry's preprocessing
fields), still uint8 for decoded files so that 4x fewer bytes cross process boundaries and the
host-to-device copy; the float conversion and ImageNet normalisation run on the model's device,
on whole batches.
A bad input never raises out of a worker: it becomes an error string carried with its batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Union, cast

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import InvalidInputError
from ._images import load_image, to_rgb
from ._tars import TarMember

__all__ = ["Batch", "ImageInput", "default_workers", "make_batch_loader", "make_loader"]

logger = logging.getLogger(__name__)

ImageInput = Union[str, "os.PathLike[str]", Image.Image, torch.Tensor, TarMember]
Transform = Callable[[object], torch.Tensor]


@dataclass
class Batch:
    """Inputs ``indices`` (positions in the caller's list); ``images`` stacks the good ones."""

    indices: list[int]
    images: torch.Tensor | None  # N_ok x 3 x H x W, uint8 or float in [0, 1]
    errors: list[str | None]  # one per index; None where the image is in ``images``

    def pin_memory(self) -> Batch:
        # Called by DataLoader(pin_memory=True): page-locked memory makes the copy to CUDA async.
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


def prepare(image: object, geometry: Transform, *, draft: bool = True) -> torch.Tensor:
    """One input as a cropped CHW tensor (uint8, or float in [0, 1] for float tensor inputs).

    ``draft``: JPEG files may decode at a reduced scale (fast); False decodes them in full, as
    published evaluations do.
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image, draft=draft)
    elif isinstance(image, TarMember):
        image = load_image(image.open(), draft=draft)
    elif isinstance(image, Image.Image):
        image = to_rgb(image)
    elif isinstance(image, torch.Tensor):
        image = _check_tensor(image)
    else:
        kind = type(image).__name__
        msg = f"Unsupported input of type {kind!r}: pass a path, a PIL image or a CHW tensor."
        raise InvalidInputError(msg)
    return geometry(image)


def _check_tensor(image: torch.Tensor) -> torch.Tensor:
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        msg = f"Tensor images must be CHW with 1 or 3 channels, got shape {tuple(image.shape)}."
        raise InvalidInputError(msg)
    if image.dtype != torch.uint8 and not image.is_floating_point():
        msg = f"Tensor images must be uint8 (0-255) or float (0-1), got dtype {image.dtype}."
        raise InvalidInputError(msg)
    image = image.detach().cpu()
    if image.is_floating_point():
        _check_range(image)
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


# Float images are 0-1; a little beyond is rounding (a resize, a colour conversion), not 0-255.
_FLOAT_SLACK = 1 / 255


def _check_range(image: torch.Tensor) -> None:
    """Refuse float pixels outside [0, 1]: 0-255 values, or normalised ones, as floats."""
    if image.numel() == 0:
        return
    if not bool(torch.isfinite(image).all()):
        msg = "Float tensor image holds NaN or infinite values: pass finite values in [0, 1]."
        raise InvalidInputError(msg)
    low, high = float(image.min()), float(image.max())
    if low < -_FLOAT_SLACK or high > 1 + _FLOAT_SLACK:
        msg = (
            f"Float tensor images must hold values in [0, 1], got {low:.4g} to {high:.4g}: "
            "divide 0-255 values by 255 (or pass a uint8 tensor); do not normalise them, the "
            "model's preprocessing does."
        )
        raise InvalidInputError(msg)


class _Inputs(Dataset[tuple[int, torch.Tensor | None, str | None]]):
    def __init__(self, items: Sequence[ImageInput], geometry: Transform, draft: bool):
        self.items, self.geometry, self.draft = items, geometry, draft

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, prepare(self.items[index], self.geometry, draft=self.draft), None
        except InvalidInputError as exc:
            return index, None, str(exc)
        except Exception as exc:  # any decoder failure is that input's error, never the run's
            logger.debug("input %d failed", index, exc_info=True)
            return index, None, f"{type(exc).__name__}: {exc}"


def _collate(samples: list[tuple[int, torch.Tensor | None, str | None]]) -> Batch:
    good = [t for _, t, _ in samples if t is not None]
    if good and any(t.dtype != torch.uint8 for t in good):
        good = [t.float() / 255 if t.dtype == torch.uint8 else t.float() for t in good]
    images = torch.stack(good) if good else None
    return Batch([i for i, _, _ in samples], images, [e for _, _, e in samples])


def default_workers(device: torch.device) -> int:
    """Decoding processes: one per spare core for a CPU model, up to 8 to keep a GPU fed."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    if device.type == "cpu":
        # The model's threads use the cores; one worker decoding alongside them costs the model
        # little (decoding is ~5% of a ResNet-50 forward) and hides all of the decode time.
        return max(1, min(4, cores // 4))
    return max(1, min(8, cores - 1))


def make_loader(
    items: Sequence[ImageInput],
    order: Sequence[int],
    geometry: Transform,
    *,
    batch_size: int,
    workers: int,
    pin_memory: bool,
    draft: bool = True,
) -> Iterable[Batch]:
    """Batches of ``items[order[...]]``, consecutive and in order, decoded by ``workers``.

    ``draft=False`` decodes JPEGs in full (evaluation); classify/embed keep the fast draft decode.
    """
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    return make_batch_loader(
        items, batches, geometry, workers=workers, pin_memory=pin_memory, draft=draft
    )


def make_batch_loader(
    items: Sequence[ImageInput],
    batches: Sequence[Sequence[int]],
    geometry: Transform,
    *,
    workers: int,
    pin_memory: bool,
    draft: bool = True,
) -> Iterable[Batch]:
    """One :class:`Batch` per entry of ``batches`` (positions in ``items``), in that order.

    ``batches`` may be lazy (a Sequence computing each batch when asked): nothing here holds a
    list as long as the inputs.
    """
    loader: Iterable[Batch] = DataLoader(
        _Inputs(items, geometry, draft),
        batch_sampler=cast("Iterable[list[int]]", batches),
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
    )
    return loader
