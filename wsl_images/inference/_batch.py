"""A batch as the pipeline carries it: positions, crops, errors, and JPEG bytes for the device."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Batch"]


@dataclass
class Batch:
    """Inputs ``indices`` (positions in the caller's list); ``images`` stacks the good ones.

    A batch as the pipeline yields it is complete. Inside the pipeline, a chunk may also carry
    ``encoded``: the JPEG bytes of inputs whose decoding waits for the device, one tensor, cut
    by ``spans`` (position in ``indices``, start, length, EXIF orientation); those inputs have
    no error and no row in ``images`` yet.
    """

    indices: list[int]
    images: torch.Tensor | None  # N_ok x 3 x H x W, uint8 or float in [0, 1]
    errors: list[str | None]  # one per index; None where the image is in ``images``
    encoded: torch.Tensor | None = None
    spans: list[tuple[int, int, int, int]] = field(default_factory=list)
    group: int = 0  # the caller's batch this chunk belongs to
    last: bool = True  # the last chunk of that batch

    def pin_memory(self) -> Batch:
        # Called by DataLoader(pin_memory=True): page-locked memory makes the copy to CUDA async.
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self
