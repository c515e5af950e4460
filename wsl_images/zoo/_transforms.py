"""The eval preprocessing a checkpoint expects, and the torchvision transforms built from it.

:class:`Preprocessing` is plain data (a registry row's field); the transforms import torchvision
only when they are built, so the registry stays torch-free. The eval preprocessing has two
halves: geometry (resize, center crop), which runs per image in the pipeline's workers on uint8
pixels, and normalisation (to float, mean/std), which runs on whole batches on the model's
device. ``eval_transforms`` is the two in one, for single images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from torchvision.transforms import v2

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocessing",
    "eval_transforms",
    "geometry",
    "normalization",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """The eval preprocessing a checkpoint expects; ``transforms()`` and the pipeline use it."""

    resize: int = 256  # the shorter side is resized to this, keeping the aspect ratio
    crop: int = 224  # then the center crop x crop is the model's input
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"  # of the resize
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per RGB channel, of values in [0, 1]
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def text(self) -> str:
        """One line for people, e.g. in ``info`` and the docstrings."""
        return (
            f"resize {self.resize} ({self.interpolation}), center crop {self.crop}, "
            f"mean {self.mean}, std {self.std}"
        )


def geometry(pre: Preprocessing) -> v2.Compose:
    """To a tensor image, resize the shorter side to ``pre.resize``, center crop ``pre.crop``.

    The dtype is kept: uint8 stays uint8 (4x fewer bytes between processes), float stays float.
    """
    from torchvision.transforms import InterpolationMode, v2

    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(
                pre.resize, interpolation=InterpolationMode(pre.interpolation), antialias=True
            ),
            v2.CenterCrop(pre.crop),
        ]
    )


def normalization(pre: Preprocessing) -> v2.Compose:
    """uint8 (0-255) or float (0-1) images to float32, normalised with ``pre.mean``/``pre.std``."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=pre.mean, std=pre.std)]
    )


def eval_transforms(pre: Preprocessing) -> v2.Compose:
    """The whole eval preprocessing for one image (PIL, uint8 or float CHW tensor)."""
    from torchvision.transforms import v2

    return v2.Compose([*geometry(pre).transforms, *normalization(pre).transforms])
