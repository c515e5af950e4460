"""wsl_images: Facebook AI's WSL, SSL and SWSL ImageNet models as torchvision ResNets.

>>> import wsl_images
>>> model = wsl_images.get_model("resnext101_32x8d_wsl").eval()

Importing the package is cheap: the model table and the errors are plain Python, and everything
that needs torch (models, Classifier, evaluate, export) is imported on first use (PEP 562), so
``wsl-images list`` never waits for torch. The package is laid out by concern; each folder's
``__init__`` says what it owns (``docs/architecture.md`` draws the layers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    CheckpointError,
    ClearCacheError,
    DistributedTimeoutError,
    DownloadError,
    ExportError,
    FileInUseError,
    HashMismatchError,
    ImageDecodeError,
    InvalidInputError,
    MissingDependencyError,
    OfflineError,
    UnknownModelError,
    UnreachableError,
    WslImagesError,
)
from .zoo import Weights, get_weights, list_models

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from .cache import BadFile, CacheEntry
    from .evaluation import EvalResult, evaluate
    from .export import export_model
    from .inference import Classifier
    from .jobs import EmbeddingMatrix, ResultRow, read_embeddings, read_results
    from .models import clear_cache, download, entrypoints, get_model, scan_cache, verify_cache
    from .zoo import FeatureExtractor, FeatureInfo

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access.
_LAZY = {
    "BadFile": "cache",
    "CacheEntry": "cache",
    "Classifier": "inference",
    "EmbeddingMatrix": "jobs",
    "EvalResult": "evaluation",
    "FeatureExtractor": "zoo",
    "FeatureInfo": "zoo",
    "ResultRow": "jobs",
    "clear_cache": "models",
    "download": "models",
    "entrypoints": "models",
    "evaluate": "evaluation",
    "export_model": "export",
    "get_model": "models",
    "read_embeddings": "jobs",
    "read_results": "jobs",
    "scan_cache": "models",
    "verify_cache": "models",
}

__all__ = [
    "BadFile",
    "CacheEntry",
    "CheckpointError",
    "Classifier",
    "ClearCacheError",
    "DistributedTimeoutError",
    "DownloadError",
    "EmbeddingMatrix",
    "EvalResult",
    "ExportError",
    "FeatureExtractor",
    "FeatureInfo",
    "FileInUseError",
    "HashMismatchError",
    "ImageDecodeError",
    "InvalidInputError",
    "MissingDependencyError",
    "OfflineError",
    "ResultRow",
    "UnknownModelError",
    "UnreachableError",
    "Weights",
    "WslImagesError",
    "__version__",
    "clear_cache",
    "download",
    "entrypoints",
    "evaluate",
    "export_model",
    "get_model",
    "get_weights",
    "list_models",
    "read_embeddings",
    "read_results",
    # The 16 entrypoints (resnext101_32x8d_wsl, ...), generated from the registry.
    *list_models(),
    "scan_cache",
    "verify_cache",
]


def __getattr__(name: str) -> Any:
    """Import a lazy public name (or one of the 16 entrypoints) on first access."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in list_models():
        value = importlib.import_module(".models", __name__).entrypoints()[name]
    else:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
