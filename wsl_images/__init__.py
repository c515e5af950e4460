"""wsl_images: Facebook AI's WSL, SSL and SWSL ImageNet models as torchvision ResNets.

>>> import wsl_images
>>> model = wsl_images.get_model("resnext101_32x8d_wsl").eval()
"""

from __future__ import annotations

from .cache import download
from .errors import (
    CheckpointError,
    DownloadError,
    ExportError,
    HashMismatchError,
    ImageDecodeError,
    InvalidInputError,
    MissingDependencyError,
    OfflineError,
    UnknownModelError,
    WslImagesError,
)
from .evaluation import EvalResult, evaluate
from .export import export_model
from .features import FeatureExtractor, FeatureInfo
from .models import entrypoints, get_model
from .predict import Classifier
from .registry import Weights, get_weights, list_models

__version__ = "0.1.0"

# The 16 entrypoints (resnext101_32x8d_wsl, ...) are generated from the registry.
globals().update(entrypoints())

__all__ = [
    "CheckpointError",
    "Classifier",
    "DownloadError",
    "EvalResult",
    "ExportError",
    "FeatureExtractor",
    "FeatureInfo",
    "HashMismatchError",
    "ImageDecodeError",
    "InvalidInputError",
    "MissingDependencyError",
    "OfflineError",
    "UnknownModelError",
    "Weights",
    "WslImagesError",
    "__version__",
    "download",
    "entrypoints",
    "evaluate",
    "export_model",
    "get_model",
    "get_weights",
    "list_models",
    *sorted(entrypoints()),
]
