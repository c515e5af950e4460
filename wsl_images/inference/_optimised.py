"""ONNX Runtime's own optimised graph, kept in the cache per CPU kind, so that a later session
starts without optimising (resnext101_32x48d: 0.1 s instead of 6.7 s).

At its highest level ONNX Runtime folds BatchNorm, fuses activations and sums into the
convolutions and reorders them into its blocked NCHWc layout, whose block is the CPU's vector
width (8 floats with AVX2, 16 with AVX-512). The saved result is only right where ONNX Runtime
makes the same choices, so its key names the onnxruntime version and a fingerprint of those
choices: a digest of the graph that ONNX Runtime writes for a tiny probe shipped with the package
(convolutions, a sum, pools; about 7 ms, once per process, in a scratch folder of the cache,
without importing onnx), the names of the nodes it adds left out (:mod:`._onnxwire`). A mixed
cluster sharing one cache keeps one saved graph per kind of CPU.

It is made once per (engine graph, onnxruntime version, fingerprint): a session at the highest
level writes it, weights as external data; a second session loads it with optimisations off,
and both run one batch, which must agree (else nothing is kept and the engine optimises at each
start, as without it). Like the engine graph it is a derived folder of the checkpoint: hashed,
refused when changed, covered by ``cache verify`` and ``cache clear``. Where the cache cannot
hold it (read-only), the engine optimises at each start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

from .. import cache
from ..errors import WslImagesError
from ._engines import session_options
from ._onnxwire import without_node_names

__all__ = [
    "OPTIMISED",
    "PROBE",
    "build_probe_graph",
    "cpu_fingerprint",
    "obtain_optimised",
    "optimised_key",
    "probe_graph",
]

log = logging.getLogger(__name__)

OPTIMISED = "features.ort.onnx"
PROBE = "data/ort_probe.onnx"  # the CPU probe graph, shipped in the package
_ABOUT = "about.json"
_RECIPE = 1  # bump when the saved graph changes for the same versions (options, probe)
_TOLERANCE = 1e-4  # the most the saved graph's features may differ from the live session's


def optimised_key(graph_key: str, fingerprint: str) -> str:
    """The cache key of the saved optimised graph of the engine graph ``graph_key`` for the CPU
    kind ``fingerprint`` and this onnxruntime."""
    import onnxruntime as ort

    model = graph_key.split("-", 1)[1].rsplit("-", 1)[0]
    spec = {"recipe": _RECIPE, "graph": graph_key, "ort": ort.__version__, "cpu": fingerprint}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return f"ort-{model}-{digest[:16]}"


def obtain_optimised(graph: Path, source: Path, graph_key: str, threads: int) -> Path | None:
    """The saved optimised graph of ``graph`` (the engine graph derived from ``source`` under
    ``graph_key``) for this CPU kind: found in the cache, or made and checked now; None where
    it cannot be kept or does not match (the engine then optimises ``graph`` itself)."""
    try:
        fingerprint = cpu_fingerprint(source.parent)
        key = optimised_key(graph_key, fingerprint)
        found = cache.load_derived_files(source, key)
        if found is not None:
            return found / OPTIMISED

        def make(folder: Path) -> None:
            _save_optimised(graph, folder, threads, fingerprint)

        return cache.keep_derived_files(source, key, make) / OPTIMISED
    except (WslImagesError, _MismatchError) as exc:  # a read-only cache; a saved graph that differs
        log.info("onnxruntime optimises the graph at each start: %s", exc)
    except Exception as exc:  # onnxruntime's own errors: the engine runs without the saved graph
        log.warning(
            "Could not save onnxruntime's optimised graph (%s): it optimises at each start", exc
        )
    return None


class _MismatchError(Exception):
    """The saved optimised graph did not give the live session's features."""


def _save_optimised(graph: Path, folder: Path, threads: int, fingerprint: str) -> None:
    import numpy as np
    import onnxruntime as ort

    start = time.perf_counter()
    options = session_options(threads)
    options.optimized_model_filepath = str(folder / OPTIMISED)
    # The weights beside it, as in the engine graph (32x48d: 3.3 GB, over protobuf's 2 GB).
    entries = {
        "session.optimized_model_external_initializers_file_name": f"{OPTIMISED}.data",
        "session.optimized_model_external_initializers_min_size_in_bytes": "1024",
    }
    for name, value in entries.items():
        options.add_session_config_entry(name, value)
    live = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    batch = _probe_batch(live)
    expected = live.run(None, batch)[0]
    del live  # one model's weights in memory at a time
    saved = ort.InferenceSession(
        str(folder / OPTIMISED),
        session_options(threads, optimise=False),
        providers=["CPUExecutionProvider"],
    )
    got = saved.run(None, batch)[0]
    diff = float(np.abs(got - expected).max())
    if not diff <= _TOLERANCE:  # NaN fails too
        msg = f"the saved optimised graph differs from the live session by {diff:.2e}"
        raise _MismatchError(msg)
    about = {
        "recipe": _RECIPE,
        "onnxruntime": ort.__version__,
        "cpu_fingerprint": fingerprint,
        "max_abs_diff": diff,
        "seconds": time.perf_counter() - start,
    }
    (folder / _ABOUT).write_text(json.dumps(about, indent=1) + "\n", encoding="utf-8")


def _probe_batch(session: Any) -> dict[str, Any]:
    """Two images of the graph's input size, reproducible."""
    import numpy as np

    (spec,) = session.get_inputs()
    _, channels, height, width = spec.shape
    rng = np.random.default_rng(0)
    return {spec.name: rng.standard_normal((2, channels, height, width), dtype=np.float32)}


def cpu_fingerprint(cache_folder: Path) -> str:
    """What ONNX Runtime makes of convolutions on this CPU (its blocked layout and block size),
    as a short digest: equal on CPUs where a saved optimised graph is interchangeable. Taken
    once per process, in a scratch folder of the cache folder ``cache_folder``."""
    if not _FINGERPRINT:
        _FINGERPRINT.append(_take_fingerprint(cache_folder))
    return _FINGERPRINT[0]


_FINGERPRINT: list[str] = []


def _take_fingerprint(cache_folder: Path) -> str:
    # The probe ships with the package and the result is read from its bytes, so that a later
    # run does not import onnx (0.8 s). What onnxruntime writes is hashed without the names it
    # gives the nodes it adds: their order varies from session to session (on an AVX-512 CPU about
    # a third of the sessions swapped two), which made two keys, so two saved graphs, for one
    # CPU. Any other difference only makes a key of its own, never a wrong match.
    import onnxruntime as ort

    with cache.scratch_folder(cache_folder) as scratch:
        options = session_options(1)
        options.optimized_model_filepath = str(scratch / "probe.onnx")
        ort.InferenceSession(probe_graph(), options, providers=["CPUExecutionProvider"])
        made = (scratch / "probe.onnx").read_bytes()
    return hashlib.sha256(without_node_names(made)).hexdigest()[:16]


def probe_graph() -> bytes:
    """The probe graph as shipped (``wsl_images/data/ort_probe.onnx``, written by
    :func:`build_probe_graph`)."""
    return resources.files("wsl_images").joinpath(PROBE).read_bytes()


def build_probe_graph() -> bytes:
    """A tiny graph with what the ResNets have: 7x7 and 1x1 convolutions on 3 and 24 channels
    (not a multiple of 16: the blocked weights show the block), ReLU, a residual sum, pools.
    ``python tools/update_probe.py`` writes it into the package (needs onnx)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal(shape, dtype=np.float32), name)
        for name, shape in (("w1", (24, 3, 7, 7)), ("w2", (24, 24, 1, 1)))
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[3, 3, 3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"]),
        helper.make_node("Add", ["c2", "p1"], ["s"]),
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cpu-probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 1, 1])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the extra allows
    return bytes(model.SerializeToString())
