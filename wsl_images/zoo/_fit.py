"""Which of the zoo's architectures a state dict was saved from, told by its tensors' shapes.

Shapes only: the block type (``layer1.0.conv3`` exists in a Bottleneck), the blocks per stage
(the ``layerS.N.`` indices), the cardinality and width of a ResNeXt (``layer1.0.conv2`` is a
grouped convolution of ``groups x width`` channels, ``width`` of them per group) and the width
of ``fc``'s input. No tensor is read, so this costs nothing next to loading the file, and it
imports no torch: a shape is a tuple of ints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ._registry import DEFAULT_MODEL, Architecture, get_weights, list_models

__all__ = ["architecture_of", "describe_shapes", "models_for"]

Shapes = Mapping[str, Sequence[int]]
# Among models of one architecture (same shapes, same preprocessing), the one a state dict is
# taken for: the default model if it fits, then the regimes in this order.
_REGIMES = ("swsl", "ssl", "wsl")


def architecture_of(shapes: Shapes) -> Architecture | None:
    """The zoo's architecture these shapes describe, or None when they fit none of them."""
    found = _configuration(shapes)
    if found is None:
        return None
    archs = {get_weights(n).arch for n in list_models()}
    fits = [a for a in archs if (a.block, a.layers, a.groups, a.width_per_group) == found]
    if len(fits) != 1:
        return None
    arch = fits[0]
    fc = shapes.get("fc.weight")
    if fc is not None and (len(fc) != 2 or fc[1] != arch.num_features):
        return None
    return arch


def models_for(arch: Architecture) -> list[str]:
    """The canonical names of the models of ``arch``, the preferred one first."""
    names = [n for n in list_models() if get_weights(n).arch == arch]
    return sorted(names, key=lambda n: (n != DEFAULT_MODEL, _REGIMES.index(get_weights(n).regime)))


def describe_shapes(shapes: Shapes) -> str:
    """What the shapes look like, for a message: "Bottleneck blocks (3, 4, 6, 3), 32x4d"."""
    found = _configuration(shapes)
    if found is None:
        return "no ResNet stage (no 4-D 'layer1.0.conv2.weight')"
    block, layers, groups, width = found
    text = f"{block} blocks {layers}"
    return text + (f", {groups}x{width}d" if groups != 1 else f", width {width}")


def _configuration(shapes: Shapes) -> tuple[str, tuple[int, ...], int, int] | None:
    """(block, blocks per stage, groups, width per group) read from the shapes, or None."""
    conv2 = shapes.get("layer1.0.conv2.weight")
    if conv2 is None or len(conv2) != 4 or conv2[1] == 0:
        return None
    bottleneck = "layer1.0.conv3.weight" in shapes
    layers = tuple(_blocks(shapes, stage) for stage in (1, 2, 3, 4))
    if not bottleneck:
        return "BasicBlock", layers, 1, 64
    groups = conv2[0] // conv2[1]
    return "Bottleneck", layers, groups, conv2[0] // max(groups, 1)


def _blocks(shapes: Shapes, stage: int) -> int:
    """How many blocks stage ``stage`` has: 1 + the highest ``layerS.N.`` index."""
    prefix = f"layer{stage}."
    indices = [key[len(prefix) :].split(".", 1)[0] for key in shapes if key.startswith(prefix)]
    return 1 + max((int(i) for i in indices if i.isdigit()), default=-1)
