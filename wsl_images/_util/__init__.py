"""Private infrastructure shared by every layer: atomic files, temp-file bookkeeping, progress
bars, torch.hub's file-name rule, lazy package faces and the optional ONNX packages' checks.

Owns: how anything wsl-images writes reaches the disk (a temp file beside the target, fsynced,
published by one rename), how abandoned temp files are recognised, and the progress bar.
May use: ``errors`` only. Imports neither torch nor requests.
"""

from __future__ import annotations

from ._atomic import TempFile, atomic_file, atomic_folder, cleanup_stale, is_temp_name, replace
from ._extras import (
    ENGINE_ONNXRUNTIME,
    EXPORT_ONNXRUNTIME,
    ONNX_PACKAGES,
    missing_onnx_packages,
    outdated_onnxruntime,
)
from ._filenames import hash_prefix_of
from ._lazy import lazy_names
from ._progress import Bar, progress_bar
from ._temps import (
    BEAT_LOST_S,
    BEAT_S,
    SILENT_S,
    Heartbeat,
    TempEntry,
    host_id,
    pid_alive,
    temp_files,
    temp_name,
)

__all__ = [
    "BEAT_LOST_S",
    "BEAT_S",
    "ENGINE_ONNXRUNTIME",
    "EXPORT_ONNXRUNTIME",
    "ONNX_PACKAGES",
    "SILENT_S",
    "Bar",
    "Heartbeat",
    "TempEntry",
    "TempFile",
    "atomic_file",
    "atomic_folder",
    "cleanup_stale",
    "hash_prefix_of",
    "host_id",
    "is_temp_name",
    "lazy_names",
    "missing_onnx_packages",
    "outdated_onnxruntime",
    "pid_alive",
    "progress_bar",
    "replace",
    "temp_files",
    "temp_name",
]
