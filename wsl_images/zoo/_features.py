"""Backbones: a ResNet's stem and stage outputs as a list of feature maps (``features_only``).

Built on torchvision's public ``create_feature_extractor`` (a torch.fx graph of the ResNet cut
at the chosen nodes), not a re-implementation of the forward pass. Indices follow timm:

==== ========== ========================== =========
 idx  node       what                       stride
==== ========== ========================== =========
 0    relu       stem: conv1, bn1, relu     2
 1    layer1     after maxpool and layer1   4
 2    layer2                                8
 3    layer3                                16
 4    layer4                                32
==== ========== ========================== =========

(Strides are those of the default ResNet; with ``replace_stride_with_dilation`` they are
computed from the model, so ``feature_info`` stays true.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.models.resnet import ResNet

from ..errors import InvalidInputError

__all__ = [
    "DEFAULT_OUT_INDICES",
    "STAGE_NODES",
    "FeatureExtractor",
    "FeatureInfo",
    "FeatureStage",
    "normalize_indices",
]

# The graph node after which each index is taken (module names in torchvision's ResNet).
STAGE_NODES = ("relu", "layer1", "layer2", "layer3", "layer4")
# Layer1-4 (strides 4-32): what FPN-style necks take. timm's default also includes the stem.
DEFAULT_OUT_INDICES = (1, 2, 3, 4)


@dataclass(frozen=True)
class FeatureStage:
    """One returned feature map: its index, source module, channels and stride."""

    index: int  # 0 = stem, 1-4 = layer1..layer4
    module: str  # the ResNet module whose output it is
    num_chs: int  # channels (dim 1 of the map)
    reduction: int  # stride w.r.t. the input: a 224 input gives a 224 // reduction map


class FeatureInfo(tuple[FeatureStage, ...]):
    """The stages a :class:`FeatureExtractor` returns, in output order (timm-style accessors)."""

    __slots__ = ()

    def channels(self) -> list[int]:
        return [s.num_chs for s in self]

    def reduction(self) -> list[int]:
        return [s.reduction for s in self]

    def module_name(self) -> list[str]:
        return [s.module for s in self]


def normalize_indices(out_indices: Sequence[int]) -> tuple[int, ...]:
    """Validate ``out_indices`` (0-4, or -5..-1 counted from the end) into 0-4, order kept."""
    n = len(STAGE_NODES)
    try:
        given = tuple(out_indices)
    except TypeError:
        given = ()
    bad = [i for i in given if not isinstance(i, int) or isinstance(i, bool) or not -n <= i < n]
    result = tuple(i % n for i in given if i not in bad)
    if not given or bad or len(set(result)) != len(result):
        msg = (
            f"out_indices {out_indices!r} is not valid: give distinct stage indices, "
            "0 (stem, stride 2) and 1-4 (layer1-layer4, strides 4-32), or -5..-1 from the end, "
            "e.g. out_indices=(1, 2, 3, 4)."
        )
        raise InvalidInputError(msg)
    return result


def _stages(model: ResNet) -> list[FeatureStage]:
    """Channels and strides of all five stages, read from the model's own layers."""
    conv1 = model.conv1
    reduction = _stride(conv1)
    stages = [FeatureStage(0, STAGE_NODES[0], conv1.out_channels, reduction)]
    pool = model.maxpool
    reduction *= pool.stride if isinstance(pool.stride, int) else pool.stride[0]
    for index, node in enumerate(STAGE_NODES[1:], start=1):
        layer = getattr(model, node)
        first, last = layer[0], layer[-1]
        if first.downsample is not None:  # the stage's stride lives in its projection shortcut
            reduction *= _stride(first.downsample[0])
        out_conv = getattr(last, "conv3", None) or last.conv2  # Bottleneck / BasicBlock
        stages.append(FeatureStage(index, node, out_conv.out_channels, reduction))
    return stages


def _stride(conv: nn.Module) -> int:
    if not isinstance(conv, nn.Conv2d):  # pragma: no cover - torchvision's ResNet only
        msg = f"expected a Conv2d, got {type(conv).__name__}"
        raise TypeError(msg)
    return int(conv.stride[0])


class FeatureExtractor(nn.Module):
    """A ResNet cut after the stages in ``out_indices``; ``forward`` returns their maps.

    ``forward(x)`` returns a ``list`` of tensors, one per entry of ``out_indices`` in that order,
    each of shape ``(N, feature_info[i].num_chs, H // reduction, W // reduction)`` (rounded up
    for sizes not divisible by the stride). The wrapped fx graph is ``self.body``, so state-dict
    keys read ``body.conv1.weight`` etc.; ``fc`` and unused later stages are not in it.
    """

    def __init__(self, model: ResNet, out_indices: Sequence[int] = DEFAULT_OUT_INDICES) -> None:
        super().__init__()
        indices = normalize_indices(out_indices)
        stages = _stages(model)
        self.feature_info = FeatureInfo(stages[i] for i in indices)
        self._keys = [str(i) for i in indices]
        # Tracing is symbolic (no tensor is computed), so this works on the meta device too.
        self.body = create_feature_extractor(
            model, return_nodes={STAGE_NODES[i]: str(i) for i in indices}
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: dict[str, torch.Tensor] = self.body(x)
        return [out[k] for k in self._keys]
