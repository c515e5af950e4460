"""JPEG decoding on the model's device: the batch's JPEG bytes become crops there.

Workers send the bytes of the JPEGs a GPU decodes as Pillow would (:mod:`._crops`); here, in
the main process, ``torchvision.io.decode_jpeg(list_of_tensors, device=...)`` decodes them in one
call (nvJPEG, hardware-assisted on A100/H100-class GPUs), the EXIF orientation is applied as
Pillow's ``exif_transpose`` does, and the same geometry as the CPU path (shorter side to the
registry's resize, antialiased, then the center crop) runs on the device, on float pixels.
A file the device cannot decode after all is decoded on the CPU from its bytes, here, with the
CPU path's result or error: nothing is dropped and the order is kept.

The device is a parameter: on the CPU, torchvision's CPU ``decode_jpeg`` stands in for nvJPEG,
which is how the tests and ``benchmarks/gpu.py --quick`` run this path without a GPU.
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torchvision
from torchvision.io import ImageReadMode, decode_jpeg

from ..errors import InvalidInputError
from ._crops import Transform, attempt
from ._share import AdaptiveShare, Share

__all__ = [
    "DECODE_MODES",
    "DecodeStats",
    "DeviceDecoder",
    "check_decode",
    "decoder_for",
    "orient",
]

logger = logging.getLogger(__name__)

DECODE_MODES = ("auto", "cpu", "gpu")
# Set by the tests and benchmarks/gpu.py --quick only: decode="gpu"/"auto" on a CPU model then
# run the device path with torchvision's CPU decoder standing in for nvJPEG.
CPU_STANDS_IN = False
_LISTS = tuple(int(p) for p in torchvision.__version__.split(".")[:2]) >= (0, 19)


@dataclass
class DecodeStats:
    """How a run's images were decoded (counted in the main process)."""

    device: int = 0  # decoded by the device
    cpu: int = 0  # decoded by the CPU (workers, or here after the device refused them)
    refused: int = 0  # sent to the device, decoded on the CPU after it refused them
    shares: list[float] = field(default_factory=list)  # the device's share, batch by batch


class DeviceDecoder:
    """Decodes the JPEG bytes of each batch on ``device`` and crops them there.

    ``geometry``: the CPU path's transform (resize, center crop), applied here to float pixels.
    ``share``: which JPEG files go to the device (all of them, or an adaptive share beside the
    CPU workers). ``draft``: how the CPU decodes a file the device refuses, as the CPU path.
    """

    def __init__(
        self, device: torch.device, geometry: Transform, *, share: Share, draft: bool = True
    ) -> None:
        self.device, self.geometry, self.share, self.draft = device, geometry, share, draft
        self.stats = DecodeStats()

    @property
    def mode(self) -> str:
        """``gpu`` (every JPEG it can take) or ``hybrid`` (a share, beside the CPU workers)."""
        return "hybrid" if isinstance(self.share, AdaptiveShare) else "gpu"

    def check(self) -> str | None:
        """Why this device cannot decode JPEGs (torchvision without nvJPEG...), or None."""
        import numpy as np
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buf, format="JPEG")
        try:
            (out,) = self._decode([torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)])
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if out.shape == (3, 8, 8) else f"decoded to shape {tuple(out.shape)}"

    def crops(self, encoded: Sequence[tuple[torch.Tensor, int]]) -> list[torch.Tensor | str]:
        """One crop (float, 0-1, on the device) or error string per JPEG (its bytes as a uint8
        CPU tensor, and its EXIF orientation), in order."""
        if not encoded:
            return []
        datas = [data for data, _ in encoded]
        try:
            decoded: list[torch.Tensor | None] = list(self._decode(datas))
        except RuntimeError:
            decoded = [self._one(data) for data in datas]  # find the file(s) it refused
        images: list[torch.Tensor | str] = [""] * len(encoded)
        upright: dict[int, torch.Tensor] = {}
        for k, (image, (data, orientation)) in enumerate(zip(decoded, encoded, strict=True)):
            if image is not None and image.shape[0] == 3:
                upright[k] = orient(image, orientation)
            else:
                images[k] = self._on_cpu(data)
        for k, crop in self._geometry(upright).items():
            images[k] = crop
        self.stats.device += len(upright)
        return images

    def _decode(self, datas: list[torch.Tensor]) -> list[torch.Tensor]:
        if _LISTS:
            out: list[torch.Tensor] = decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device)
            return out
        return [decode_jpeg(d, mode=ImageReadMode.RGB, device=self.device) for d in datas]

    def _one(self, data: torch.Tensor) -> torch.Tensor | None:
        try:
            (image,) = self._decode([data])
        except RuntimeError as exc:
            logger.debug("the device refused a JPEG (%s): decoded on the CPU", exc)
            return None
        return image

    def _on_cpu(self, data: torch.Tensor) -> torch.Tensor | str:
        """The CPU path's crop (moved to the device, as float) or its error string."""
        self.stats.refused += 1
        crop, error = attempt(io.BytesIO(data.numpy().tobytes()), self.geometry, draft=self.draft)
        if crop is None:
            return error or "cannot decode image"
        return crop.to(self.device).float().div_(255)

    def _geometry(self, images: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """The CPU path's resize and crop on float pixels, one call per distinct image size."""
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for k, image in images.items():
            by_size[tuple(image.shape)].append(k)
        crops: dict[int, torch.Tensor] = {}
        for keys in by_size.values():
            stack = torch.stack([images[k] for k in keys]).float()
            out = self.geometry(stack).as_subclass(torch.Tensor).clamp_(0, 255).div_(255)
            crops.update(zip(keys, out, strict=True))
        return crops


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """``image`` (C, H, W) upright for EXIF ``orientation`` 1-8, as Pillow's exif_transpose."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return image.rot90(-1, (-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return image.rot90(1, (-2, -1))
    return image


def check_decode(decode: str, device: torch.device) -> bool:
    """Whether ``decode`` decodes on ``device`` (False: the CPU workers decode);
    :class:`InvalidInputError` for an unknown mode, or ``"gpu"`` off CUDA. Cheap: callers check
    before any model loads."""
    if decode not in DECODE_MODES:
        msg = f"Unknown decode {decode!r}: use one of {', '.join(DECODE_MODES)}."
        raise InvalidInputError(msg)
    on_device = device.type == "cuda" or (CPU_STANDS_IN and device.type == "cpu")
    if decode == "cpu" or (decode == "auto" and not on_device):
        return False
    if not on_device:
        msg = (
            f"decode='gpu' decodes JPEGs with CUDA (nvJPEG), but the model runs on "
            f"{str(device)!r}. Use decode='cpu' or 'auto' (--decode cpu|auto), or run on a "
            "CUDA device (device='cuda')."
        )
        raise InvalidInputError(msg)
    return True


def decoder_for(
    decode: str, device: torch.device, geometry: Transform, *, draft: bool = True
) -> DeviceDecoder | None:
    """The device decoder ``decode`` asks for on ``device`` (None: the CPU workers decode).

    ``auto``: beside the CPU workers on CUDA, none elsewhere; ``gpu``: every JPEG it can take,
    CUDA only (:class:`InvalidInputError` otherwise, or when this torchvision cannot decode
    there); ``cpu``: none.
    """
    if not check_decode(decode, device):
        return None
    share: Share = Share(1.0) if decode == "gpu" else AdaptiveShare()
    decoder = DeviceDecoder(device, geometry, share=share, draft=draft)
    problem = decoder.check()
    if problem is None:
        return decoder
    if decode == "auto":
        logger.warning("JPEGs are decoded on the CPU: %s cannot decode them (%s)", device, problem)
        return None
    msg = (
        f"decode='gpu': this torchvision ({torchvision.__version__}) cannot decode JPEGs on "
        f"{device} ({problem}). Install a CUDA build of torchvision, or use decode='cpu'."
    )
    raise InvalidInputError(msg)
