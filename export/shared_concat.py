"""Concatenations that copy: every input of a skip-connection Concat quantized like its output.

ONNX Runtime runs a QDQ Concat as QLinearConcat, which copies an input's bytes only when that
input's scale and zero point equal the output's; otherwise it maps every byte through a lookup
table, one thread. In the lite network the four concatenations took 1.0-1.1 ms of a 10.5 ms int8
pass at the camera field (2 threads): 10 % of its kernel time for moving bytes. The quantizer
gives each tensor its own calibrated range; `concat_overrides` reads a first quantization and
names, for each Concat feeding convolutions, every tensor that reaches it (through data moves:
Transpose, Reshape) with the Concat output's scale and zero point, so a second quantization with
those overrides (onnxruntime's `TensorQuantOverrides`) quantizes them alike. The quantizer then
computes the int32 biases of the convolutions reading those tensors from the new scales, so
every convolution stays quantized. The inputs' ranges are each within the output's (the
concatenation of both), so nothing is clipped; an input with the narrower range loses a little
resolution.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import numpy_helper

DATA_MOVES = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "DepthToSpace", "SpaceToDepth"})
"""Operators that move values without changing them: their input and output share a quantization."""


def consumer_map(graph: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes that read it (export.quantize's rewrites use it too)."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _graph_maps(graph: Any) -> tuple[dict[str, Any], dict[str, list[Any]], dict[str, np.ndarray]]:
    producer = {out: node for node in graph.node for out in node.output}
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    return producer, consumer_map(graph), constants


def _float_source(node: Any | None, producer: dict[str, Any]) -> str | None:
    """The float tensor whose QuantizeLinear a DequantizeLinear `node` reads (None when `node` is no
    DequantizeLinear or reads a constant)."""
    if node is None or node.op_type != "DequantizeLinear":
        return None
    q = producer.get(node.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def _chain(tensor: str, producer: dict[str, Any]) -> list[str]:
    """`tensor` and, back through data moves (each reading a DequantizeLinear), the float tensors it
    is a moved copy of, down to the one a computing operator produced."""
    names = [tensor]
    node = producer.get(tensor)
    while node is not None and node.op_type in DATA_MOVES:
        source = _float_source(producer.get(node.input[0]), producer)
        if source is None:
            break
        names.append(source)
        node = producer.get(source)
    return names


def concat_overrides(quantized: Any) -> dict[str, list[dict[str, np.ndarray]]]:
    """TensorQuantOverrides for a QDQ model: each float tensor reaching a Concat whose output feeds
    only convolutions (through its QuantizeLinear/DequantizeLinear) takes that output's scale and
    zero point. Empty when the model has no such Concat."""
    graph = quantized.graph
    producer, consumers, constants = _graph_maps(graph)
    overrides: dict[str, list[dict[str, np.ndarray]]] = {}
    for node in graph.node:
        if node.op_type != "Concat":
            continue
        outs = consumers.get(node.output[0], [])
        if len(outs) != 1 or outs[0].op_type != "QuantizeLinear":
            continue
        q_out = outs[0]
        readers = [c for dq in consumers.get(q_out.output[0], []) for c in consumers.get(dq.output[0], [])]
        if not readers or any(r.op_type != "Conv" for r in readers):
            continue  # the output's tail (logits and centres) is left with its own ranges
        scale, zero_point = constants[q_out.input[1]], constants[q_out.input[2]]
        for name in node.input:
            source = _float_source(producer.get(name), producer)
            if source is None:
                continue
            for tensor in _chain(source, producer):
                overrides[tensor] = [{"scale": np.asarray(scale, np.float32), "zero_point": np.asarray(zero_point)}]
    return overrides
