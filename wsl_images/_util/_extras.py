"""The optional ONNX packages: which are missing, and whether the installed onnxruntime reads
what the exporter writes.

Export and the onnxruntime engine need the same three packages. The graphs that today's
exporter writes are ONNX IR version 10, which onnxruntime reads from 1.18 (export's parity
check); the engine also reloads a graph that onnxruntime optimised and saved with its weights
beside it, which works from 1.21 (older ones point the saved graph at the source graph's weight
file). pyproject's extras carry the same floors: [onnx] 1.18, [onnxruntime] 1.21.
"""

from __future__ import annotations

import importlib.util
import re

__all__ = [
    "ENGINE_ONNXRUNTIME",
    "EXPORT_ONNXRUNTIME",
    "ONNX_PACKAGES",
    "missing_onnx_packages",
    "outdated_onnxruntime",
]

ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
EXPORT_ONNXRUNTIME = (1, 18)  # the oldest onnxruntime that export needs
ENGINE_ONNXRUNTIME = (1, 21)  # the oldest that engine="onnxruntime" needs


def missing_onnx_packages() -> list[str]:
    """The names of :data:`ONNX_PACKAGES` that cannot be imported, found without importing."""
    return [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]


def outdated_onnxruntime(floor: tuple[int, int]) -> str | None:
    """The installed onnxruntime's version where it is older than ``floor`` (major, minor),
    else None (imports onnxruntime)."""
    import onnxruntime

    version = str(onnxruntime.__version__)
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None:  # a build that does not say: let onnxruntime itself decide
        return None
    return version if (int(found[1]), int(found[2])) < floor else None
