"""What ``models.py`` builds from: the one model table (registry), preprocessing and
transforms, text generated from the table, features, input channels, options and devices.

Owns: every fact about the 16 models (one table; docstrings, ``list``/``info`` and the README
table are generated from it) and the building blocks that turn a table row into a module.
May use: ``errors`` and ``_util``; neither the cache nor the checkpoint readers.
The table, the preprocessing and the generated text import no torch (``wsl-images list`` and
``info`` start at once); the rest is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._util import lazy_names
from ._docs import KEYWORDS, Keyword, docstring, info_lines, markdown_table, update_readme
from ._fit import architecture_of, describe_shapes, models_for
from ._registry import (
    DEFAULT_MODEL,
    LICENSE,
    Architecture,
    Weights,
    get_weights,
    imagenet_categories,
    list_models,
    released_files,
    robustness,
    suggest_names,
)
from ._transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    eval_transforms,
    geometry,
    normalization,
)

if TYPE_CHECKING:  # the lazy names, for type checkers and IDEs
    from ._channels import RGB, adapt_input_conv, check_in_chans, input_conv
    from ._devices import autocast_dtype, available_devices, resolve_device
    from ._features import (
        DEFAULT_OUT_INDICES,
        FeatureExtractor,
        FeatureInfo,
        FeatureStage,
        normalize_indices,
    )
    from ._options import ModelOptions
    from ._skeleton import meta_skeleton

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_OUT_INDICES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KEYWORDS",
    "LICENSE",
    "RGB",
    "Architecture",
    "FeatureExtractor",
    "FeatureInfo",
    "FeatureStage",
    "Keyword",
    "ModelOptions",
    "Preprocessing",
    "Weights",
    "adapt_input_conv",
    "architecture_of",
    "autocast_dtype",
    "available_devices",
    "check_in_chans",
    "describe_shapes",
    "docstring",
    "eval_transforms",
    "geometry",
    "get_weights",
    "imagenet_categories",
    "info_lines",
    "input_conv",
    "list_models",
    "markdown_table",
    "meta_skeleton",
    "models_for",
    "normalization",
    "normalize_indices",
    "released_files",
    "resolve_device",
    "robustness",
    "suggest_names",
    "update_readme",
]

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "RGB": "._channels",
        "adapt_input_conv": "._channels",
        "check_in_chans": "._channels",
        "input_conv": "._channels",
        "autocast_dtype": "._devices",
        "available_devices": "._devices",
        "resolve_device": "._devices",
        "DEFAULT_OUT_INDICES": "._features",
        "FeatureExtractor": "._features",
        "FeatureInfo": "._features",
        "FeatureStage": "._features",
        "normalize_indices": "._features",
        "ModelOptions": "._options",
        "meta_skeleton": "._skeleton",
    },
    globals(),
)
