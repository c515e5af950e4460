"""Rewrite the onnxruntime engine's CPU probe graph from its recipe:
``python tools/update_probe.py``.

The package ships the graph so that the engine takes its CPU fingerprint without importing onnx;
a test fails when the shipped file and the recipe differ.
"""

from __future__ import annotations

from pathlib import Path

from wsl_images.inference._optimised import PROBE, build_probe_graph

TARGET = Path(__file__).resolve().parents[1] / "wsl_images" / PROBE

if __name__ == "__main__":
    TARGET.write_bytes(build_probe_graph())
