"""Input channels other than RGB (``in_chans=N``): conv1 rebuilt, its pretrained weights adapted.

The rule is timm's ``adapt_input_conv``, so weights adapted here match timm's bit for bit:

- ``N == 1``: the RGB filters summed, so a grey image ``g`` gives what the RGB image
  ``(g, g, g)`` gave;
- ``N > 3`` (or 2): the RGB filters repeated ``ceil(N / 3)`` times, cut to ``N`` channels and
  scaled by ``3 / N``, so the expected activation magnitude stays that of an RGB input.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InvalidInputError

__all__ = ["RGB", "adapt_input_conv", "check_in_chans", "input_conv"]

RGB = 3


def check_in_chans(in_chans: object) -> int:
    """``in_chans`` as a positive int, or a clear error naming the value."""
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        msg = f"in_chans must be a positive integer (3 for RGB, 1 for grey), got {in_chans!r}."
        raise InvalidInputError(msg)
    return in_chans


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """conv1's RGB weight ``(O, 3, kH, kW)`` adapted to ``in_chans`` inputs (timm's rule)."""
    in_chans = check_in_chans(in_chans)
    if weight.ndim != 4 or weight.shape[1] != RGB:
        msg = f"expected an RGB conv weight of shape (O, 3, kH, kW), got {tuple(weight.shape)}."
        raise InvalidInputError(msg)
    if in_chans == RGB:
        return weight
    source_dtype = weight.dtype
    w = weight.float()  # the sums and scaling in float32 even for half-precision sources
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        repeat = math.ceil(in_chans / RGB)
        w = w.repeat(1, repeat, 1, 1)[:, :in_chans] * (RGB / float(in_chans))
    return w.to(source_dtype).contiguous()


def input_conv(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    """A conv like ``conv`` (same device) taking ``in_chans`` inputs, freshly initialised.

    Initialised as torchvision's ResNet initialises its convs (Kaiming normal, fan_out), so
    ``pretrained=False, in_chans=N`` starts from the same distribution as the RGB model.
    """
    new = nn.Conv2d(
        in_chans,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")  # no-op on meta
    return new
