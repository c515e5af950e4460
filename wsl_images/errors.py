"""The exception hierarchy of wsl_images.

Every error the library raises on purpose derives from :class:`WslImagesError`, and also from
the builtin that fits, so ``except ValueError`` keeps working for callers who know nothing of us::

    WslImagesError
    ├── UnknownModelError (ValueError)        a model name not in the registry
    ├── CheckpointError (ValueError)          a checkpoint whose keys or shapes do not fit
    ├── DistributedTimeoutError (TimeoutError) a rank waited too long for the others (torchrun)
    ├── DownloadError (OSError)               a download that failed (network, HTTP status, disk)
    │   ├── HashMismatchError                 the file's sha256 does not match its name
    │   ├── OfflineError                      a file is needed but WSL_IMAGES_OFFLINE=1
    │   └── UnreachableError                  the host does not resolve, has no route, refuses
    ├── FileInUseError (PermissionError)      a file that cannot be replaced: held by a process
    ├── ClearCacheError (OSError)             cache files that could not be removed (rest was)
    ├── ExportError (RuntimeError)            an exported model that does not match PyTorch
    ├── MissingDependencyError (ImportError)  an optional extra (e.g. [onnx]) is not installed
    └── InvalidInputError (ValueError)        an argument or image that cannot be used
        └── ImageDecodeError                  an image file that cannot be decoded
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CheckpointError",
    "ClearCacheError",
    "DistributedTimeoutError",
    "DownloadError",
    "ExportError",
    "FileInUseError",
    "HashMismatchError",
    "ImageDecodeError",
    "InvalidInputError",
    "MissingDependencyError",
    "OfflineError",
    "UnknownModelError",
    "UnreachableError",
    "WslImagesError",
]


class WslImagesError(Exception):
    """Base class of every error raised on purpose by wsl_images."""


class UnknownModelError(WslImagesError, ValueError):
    """A model name that is not one of the 16 registered models."""


class CheckpointError(WslImagesError, ValueError):
    """A checkpoint that cannot be loaded into the requested architecture."""


class DistributedTimeoutError(WslImagesError, TimeoutError):
    """Under torchrun, a rank waited longer than its timeout for the other ranks."""


class DownloadError(WslImagesError, OSError):
    """A download that could not be completed."""


class HashMismatchError(DownloadError):
    """A file whose sha256 does not start with the prefix in its name."""


class OfflineError(DownloadError):
    """A file must be fetched, but WSL_IMAGES_OFFLINE=1 forbids network access."""


class UnreachableError(DownloadError):
    """The server cannot be reached at all (a name that does not resolve, no route, a refused
    connection): reported after one quick retry, not after minutes of backoff."""


class FileInUseError(WslImagesError, PermissionError):
    """A file that could not be replaced by its new version, even after retrying for a moment:
    another process holds it open or mapped (Windows refuses to replace such a file: a model
    loaded from it, an antivirus or backup scan), or permissions forbid it."""


class ClearCacheError(WslImagesError, OSError):
    """:func:`wsl_images.clear_cache` removed what it could, but not these files.

    ``removed``: the paths it removed; ``failed``: (path, reason) of each file left in place.
    """

    def __init__(self, message: str, removed: list[Path], failed: list[tuple[Path, str]]) -> None:
        super().__init__(message)
        self.removed, self.failed = removed, failed


class InvalidInputError(WslImagesError, ValueError):
    """An argument or an input image that cannot be used."""


class ExportError(WslImagesError, RuntimeError):
    """An exported model that could not be written, loaded back, or does not match PyTorch."""


class MissingDependencyError(WslImagesError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ImageDecodeError(InvalidInputError):
    """An image file that is empty, truncated, unreadable, not an image or a decompression bomb."""
