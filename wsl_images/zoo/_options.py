"""The train/deploy keywords of ``get_model`` (``features_only``, ``out_indices``, ``in_chans``,
``dtype``, ``device``): validated together, then applied to the checkpoint and the model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.models.resnet import ResNet

from ..errors import InvalidInputError
from ._channels import RGB, adapt_input_conv, check_in_chans
from ._devices import resolve_device
from ._features import DEFAULT_OUT_INDICES, FeatureExtractor, normalize_indices

__all__ = ["ModelOptions"]


@dataclass(frozen=True)
class ModelOptions:
    """What ``get_model`` does beyond building and loading the plain ResNet."""

    features_only: bool = False
    out_indices: tuple[int, ...] = DEFAULT_OUT_INDICES
    in_chans: int = RGB
    dtype: torch.dtype | None = None  # None: as stored (float32)
    device: torch.device | None = None  # None: CPU (memory-mapped where the file allows)

    @classmethod
    def checked(
        cls,
        *,
        features_only: bool,
        out_indices: Sequence[int] | None,
        in_chans: int,
        dtype: torch.dtype | None,
        device: str | torch.device | None,
    ) -> ModelOptions:
        """The options, validated; :class:`InvalidInputError` names a bad value."""
        if out_indices is not None and not features_only:
            msg = f"out_indices={out_indices!r} needs features_only=True."
            raise InvalidInputError(msg)
        return cls(
            features_only=bool(features_only),
            out_indices=normalize_indices(
                DEFAULT_OUT_INDICES if out_indices is None else out_indices
            ),
            in_chans=check_in_chans(in_chans),
            dtype=_check_dtype(dtype),
            # Checked here, so a missing GPU is named before any file is read, not deep inside
            # the load (torch's own "Found no NVIDIA driver").
            device=resolve_device(device) if device is not None else None,
        )

    def adapt_state(self, state: dict[str, torch.Tensor]) -> None:
        """Adapt the checkpoint's conv1 (RGB) to ``in_chans`` inputs, in place."""
        weight = state.get("conv1.weight")
        if self.in_chans != RGB and weight is not None and weight.shape[1] == RGB:
            state["conv1.weight"] = adapt_input_conv(self.in_chans, weight)

    def finish(self, model: ResNet) -> ResNet | FeatureExtractor:
        """The model to return: the ResNet itself, or its feature extractor."""
        if self.features_only:
            return FeatureExtractor(model, self.out_indices)
        return model


def _check_dtype(dtype: object) -> torch.dtype | None:
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        return dtype
    msg = (
        f"dtype must be a floating torch.dtype (torch.float16, torch.bfloat16, torch.float32), "
        f"got {dtype!r}."
    )
    raise InvalidInputError(msg)
