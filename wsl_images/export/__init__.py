"""Export to ONNX or TorchScript, checked against PyTorch before anything is kept: the file is
written into a temp folder beside the output, loaded back, compared, then published (an ONNX
graph and its external data as one pair).

Owns: exported model files; :func:`export_onnx` exports and checks any module into a folder
the caller publishes (the onnxruntime engine's graph, kept in the cache).
May use: ``models``, ``cache`` (hashing), ``errors``, ``_util``. torch and onnx are imported when
an export runs, so the command line can read the defaults.
"""

from __future__ import annotations

from ._export import ATOL, FORMATS, RTOL, ExportResult, export_model, export_onnx

__all__ = ["ATOL", "FORMATS", "RTOL", "ExportResult", "export_model", "export_onnx"]
