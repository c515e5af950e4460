"""An ONNX model's bytes without its node names, read from the protobuf wire format directly
(parsing them with onnx means importing it: 0.8 s per process).

ONNX Runtime names the nodes it adds while optimising (``ReorderOutput``,
``ReorderOutput_token_4``) in an order that varies from one session to the next: two sessions
that made the same graph can write it with those names swapped. Nothing in a graph refers to a
node by its name, so a digest of the model without them is the same for the same graph.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["without_node_names"]

# Field numbers of onnx.proto: ModelProto.graph, GraphProto.node, NodeProto.name.
_MODEL_GRAPH, _GRAPH_NODE, _NODE_NAME = 7, 1, 3
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5  # the wire types a model uses (groups are obsolete)


def without_node_names(model: bytes) -> bytes:
    """``model`` (a serialised ModelProto) with every node name of its main graph removed, all
    else as written. :class:`ValueError` where the bytes are not protobuf."""
    out = bytearray()
    for number, field, payload in _fields(model):
        if number != _MODEL_GRAPH:
            out += field
            continue
        graph = bytearray()
        for inner, node_field, node in _fields(payload):
            if inner != _GRAPH_NODE:
                graph += node_field
                continue
            kept = b"".join(f for n, f, _ in _fields(node) if n != _NODE_NAME)
            graph += _length_delimited(_GRAPH_NODE, kept)
        out += _length_delimited(_MODEL_GRAPH, bytes(graph))
    return bytes(out)


def _fields(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """Each field of a message: its number, its bytes as written (key included) and, for a
    length-delimited field, its payload (else empty)."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _read_varint(data, pos)
        number, kind = key >> 3, key & 7
        payload = b""
        if kind == _VARINT:
            _, pos = _read_varint(data, pos)
        elif kind in (_I64, _I32):
            pos += 8 if kind == _I64 else 4
        elif kind == _LEN:
            size, pos = _read_varint(data, pos)
            payload, pos = data[pos : pos + size], pos + size
        else:
            msg = f"wire type {kind} at byte {start} (not written by onnx)"
            raise ValueError(msg)
        if pos > len(data):
            msg = f"field {number} at byte {start} runs past the end ({len(data)} bytes)"
            raise ValueError(msg)
        yield number, data[start:pos], payload


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            msg = f"a varint at byte {pos} runs past the end or over 64 bits"
            raise ValueError(msg)
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload
