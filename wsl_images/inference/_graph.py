"""The onnxruntime engine's graph: derived once per checkpoint and kept in the cache.

The graph is the model's forward up to the pooled features (the head stays in torch), with a
dynamic batch, its weights in a data file beside it (``features.onnx`` + ``features.onnx.data``:
one layout for every model, and the 3.3 GB 32x48d over protobuf's 2 GB limit). It is made by the
project's exporter (:func:`wsl_images.export.export_onnx`: checked against the torch model on
batches it was not traced with) into a temp folder that the cache publishes whole, as a
derived folder of the checkpoint (:func:`wsl_images.cache.keep_derived_files`), under a key
naming the model and a digest of everything that shapes the graph: the input size, the output,
the versions of the exporter (torch, onnx, onnxscript) and of this recipe. The checkpoint is
the source: a cached file by its path (its sha256 from its record), a user's local file by its
sha256 (:func:`wsl_images.cache.content_source`; hashed once per process, seconds for
gigabytes), so the export writes nothing outside the cache. Later runs find it by key and load
it after a ``stat`` of each file; ``cache verify`` hashes it, ``cache clear`` removes it with
its source.
On the CPU, the session loads onnxruntime's own optimised version of it, saved for this CPU
kind (:mod:`._optimised`), so that it starts without optimising.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import cache
from ..export import export_onnx
from ._engines import OnnxRuntimeEngine, PooledFeatures
from ._optimised import obtain_optimised

if TYPE_CHECKING:
    import torch
    from torchvision.models import ResNet

    from ..zoo import Weights

__all__ = ["GRAPH", "graph_key", "graph_spec", "obtain_graph", "onnxruntime_engine"]

log = logging.getLogger(__name__)

GRAPH = "features.onnx"
ABOUT = "about.json"  # what was made, how, and how closely it matched (for people)
_RECIPE = 1  # bump when the graph changes for the same versions (inputs, outputs, options)


def graph_spec(weights: Weights) -> dict[str, Any]:
    """Everything that shapes the graph of ``weights``' architecture, besides the checkpoint."""
    import torch

    crop = weights.preprocessing.crop
    return {
        "recipe": _RECIPE,
        "model": weights.name,
        "input": f"input: float32 N x 3 x {crop} x {crop}, normalised, any N",
        "output": f"features: float32 N x {weights.arch.num_features}, pooled",
        "exporter": "torch.onnx.export(dynamo=True), default opset",
        "torch": torch.__version__,
        "onnx": _version("onnx"),
        "onnxscript": _version("onnxscript"),
    }


def _version(package: str) -> str:
    """An installed package's version, read from its metadata: importing onnx and onnxscript
    only to read it would cost every later run 1.3 s (they are needed for the export alone)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # importable without metadata (a source checkout)
        return str(importlib.import_module(package).__version__)


def graph_key(spec: dict[str, Any]) -> str:
    """The cache key of a graph: the model's name and a digest of its spec."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return f"onnx-{spec['model']}-{digest[:16]}"


def obtain_graph(model: ResNet, weights: Weights, source: Path) -> Path:
    """The graph file of ``model`` (CPU, float32, holding the weights of the checkpoint
    ``source``: a verified file of the cache, or the stand-in of a user's file), exported into
    the cache the first time, found there afterwards."""
    spec = graph_spec(weights)
    key = graph_key(spec)
    found = cache.load_derived_files(source, key)
    if found is not None:
        return found / GRAPH

    def make(folder: Path) -> None:
        start = time.perf_counter()
        log.info("Exporting %s to ONNX for the onnxruntime engine (once per checkpoint)", key)
        diff = export_onnx(
            PooledFeatures(model).eval(),
            folder / GRAPH,
            output_name="features",
            image_size=weights.preprocessing.crop,
            external_data=True,
        )
        about = {**spec, "max_abs_diff": diff, "export_seconds": time.perf_counter() - start}
        (folder / ABOUT).write_text(json.dumps(about, indent=1) + "\n", encoding="utf-8")

    return cache.keep_derived_files(source, key, make) / GRAPH


def onnxruntime_engine(
    model: ResNet,
    weights: Weights,
    checkpoint: tuple[Path, bool],
    device: torch.device,
    cache_dir: str | os.PathLike[str] | None,
) -> OnnxRuntimeEngine:
    """The onnxruntime engine of ``model`` (CPU, float32) loaded from ``checkpoint`` (its file,
    and whether it is the cache's), on ``device``, with the threads the torch engine would use."""
    import torch

    path, cached = checkpoint
    threads = torch.get_num_threads()
    source = path if cached else cache.content_source(cache.file_sha256(path), cache_dir)
    graph = obtain_graph(model, weights, source)
    if device.type == "cpu":  # what its CPU provider makes of the graph, saved for this CPU kind
        saved = obtain_optimised(graph, source, graph_key(graph_spec(weights)), threads)
        if saved is not None:
            return OnnxRuntimeEngine(saved, device, threads, optimised=True)
    return OnnxRuntimeEngine(graph, device, threads)
