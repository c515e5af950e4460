"""One input as a worker prepares it: a crop decoded on the CPU, or JPEG bytes for the device.

The CPU path turns an input (a path, a member of a tar shard, a PIL image or a CHW tensor) into
a crop (the geometry half of :mod:`wsl_images.zoo._transforms`), still uint8 for decoded files.
For the device path a worker only reads a file's bytes and its JPEG header
(:mod:`._jpeg`): a JPEG a GPU decodes as Pillow would travels as bytes; anything else (PNG,
CMYK, progressive, cut short...) is decoded here on the CPU from the bytes already read, so
that every input still has the CPU path's result or error. Nothing here touches CUDA: these
functions run in DataLoader workers, which may be spawned.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from typing import Union

import torch
from PIL import Image

from ..errors import InvalidInputError
from ._images import load_image, to_rgb
from ._jpeg import read_header
from ._tars import TarMember

__all__ = ["Encoded", "ImageInput", "Transform", "attempt", "for_device", "prepare"]

logger = logging.getLogger(__name__)

ImageInput = Union[str, "os.PathLike[str]", Image.Image, torch.Tensor, TarMember]
Transform = Callable[[object], torch.Tensor]
# A JPEG for the device: its bytes and its EXIF orientation (1-8).
Encoded = tuple[bytes, int]


def prepare(image: object, geometry: Transform, *, draft: bool = True) -> torch.Tensor:
    """One input as a cropped CHW tensor (uint8, or float in [0, 1] for float tensor inputs).

    ``draft``: JPEG files may decode at a reduced scale (fast); False decodes them in full, as
    published evaluations do. A file's bytes may be given as an open binary file.
    """
    if isinstance(image, (str, os.PathLike, io.BytesIO)):
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


def attempt(
    image: object, geometry: Transform, *, draft: bool
) -> tuple[torch.Tensor | None, str | None]:
    """:func:`prepare`, with a failure as that input's error string instead of an exception."""
    try:
        return prepare(image, geometry, draft=draft), None
    except InvalidInputError as exc:
        return None, str(exc)
    except Exception as exc:  # any decoder failure is that input's error, never the run's
        logger.debug("input failed", exc_info=True)
        return None, f"{type(exc).__name__}: {exc}"


def for_device(
    image: object, geometry: Transform, *, draft: bool
) -> tuple[torch.Tensor | None, str | None, Encoded | None]:
    """A file's JPEG bytes for the device when a GPU decodes it as Pillow would; otherwise the
    CPU path's crop or error (decoded from the bytes already read, when they could be read)."""
    data = _read(image)
    if data is None:
        return (*attempt(image, geometry, draft=draft), None)
    header = read_header(data)
    if header.reason is None:
        return None, None, (data, header.orientation)
    logger.debug("decoded on the CPU: %s", header.reason)
    return (*attempt(io.BytesIO(data), geometry, draft=draft), None)


def _read(image: object) -> bytes | None:
    """The bytes of a file or tar member; None for other inputs and for files that cannot be
    read (the CPU path then says why, as it always has)."""
    try:
        if isinstance(image, (str, os.PathLike)):
            with open(image, "rb") as f:
                return f.read()
        if isinstance(image, TarMember) and image.error is None:
            return image.open().getvalue()
    except Exception:
        return None
    return None


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
