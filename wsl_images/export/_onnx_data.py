"""An ONNX export's external data file, named so that replacing an export is atomic.

Models over about 1.5 GB keep their weights beside the graph (protobuf's 2 GB limit); torch
names that file ``FILE.data``. Two files cannot be replaced by one rename, and with one data name
for every export a kill between the two renames left the old graph reading the new weights.
So each export's data gets a name of its own, ``FILE.<sha256[:8]>.data`` (the first 8 hex
digits of its content's sha256), referenced by the graph's ``location`` fields:

1. the new data file is moved in under its new name: the old graph still reads its own data;
2. the graph is replaced by one ``os.replace``: readers see the old pair or the new one;
3. then the data files of earlier exports to ``FILE`` (``FILE.data``, ``FILE.<hex8>.data``) that
   the graph now at ``FILE`` does not reference are removed.

A kill between 1 and 2 leaves the old pair and an unreferenced new data file; between 2 and 3,
the new pair and the old data file. The next export to ``FILE`` removes either.
onnx is imported inside the functions: it is an optional extra.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..cache import sha256_of
from ..errors import ExportError

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, TensorProto

__all__ = [
    "data_name",
    "keep_published",
    "name_external_data",
    "referenced_files",
    "remove_stale_data",
]

log = logging.getLogger(__name__)


def data_name(graph_name: str, sha256: str) -> str:
    """The external data file name of a graph named ``graph_name``, for data of ``sha256``."""
    return f"{graph_name}.{sha256[:8]}.data"


def name_external_data(graph: Path, graph_name: str) -> tuple[str, str] | None:
    """Rename the external data of the staged ``graph`` after its content (data_name of
    ``graph_name``, the name it will be published under) and point the graph at it.

    Returns (data file name, its full sha256), or None for a graph without external data.
    """
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    tensors = list(_external_tensors(model))
    locations = sorted({_location(t) for t in tensors})
    if not locations:
        return None
    if len(locations) > 1 or Path(locations[0]).name != locations[0]:
        msg = f"The exported graph keeps its weights in {locations}; expected one file beside it."
        raise ExportError(msg)
    source = graph.parent / locations[0]
    sha = sha256_of(source)
    name = data_name(graph_name, sha)
    source.rename(graph.parent / name)
    for tensor in tensors:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = name
    onnx.save(model, str(graph))
    return name, sha


def keep_published(staging: Path, folder: Path, name: str, sha256: str) -> None:
    """Drop the staged data file ``name`` if ``folder`` holds that very file already (the same
    weights exported before): replacing it would gain nothing, and on Windows fails while a
    running session has it open."""
    published = folder / name
    if published.is_file() and sha256_of(published) == sha256:
        (staging / name).unlink()


def referenced_files(graph: Path) -> set[str]:
    """The external data files the ONNX graph at ``graph`` reads (none if it is not there or
    not an ONNX model)."""
    import onnx

    if not graph.is_file():
        return set()
    try:
        model = onnx.load(str(graph), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and others: not an ONNX file
        log.debug("%s is not an ONNX graph (%s)", graph, exc)
        return set()
    return {_location(t) for t in _external_tensors(model)}


def remove_stale_data(target: Path) -> list[Path]:
    """Remove the data files of earlier exports to ``target`` that the graph there does not
    read; returns what was removed. One still open elsewhere (Windows) is left for next time."""
    keep = referenced_files(target)
    pattern = re.compile(re.escape(target.name) + r"(\.[0-9a-f]{8})?\.data")
    removed = []
    for path in sorted(target.parent.iterdir()):
        if pattern.fullmatch(path.name) is None or path.name in keep or not path.is_file():
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # another export removed it first
            continue
        except OSError as exc:  # pragma: no cover - Windows: mapped by a running session
            log.warning("Could not remove %s, an earlier export's data (%s)", path, exc)
            continue
        log.info("Removed %s: the graph at %s no longer reads it", path, target)
        removed.append(path)
    return removed


def _external_tensors(model: ModelProto) -> Iterator[TensorProto]:
    import onnx

    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield tensor


def _tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """Every tensor of ``graph``: initializers, node attributes, subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _location(tensor: TensorProto) -> str:
    return next((e.value for e in tensor.external_data if e.key == "location"), "")
