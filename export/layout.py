"""Rewrites of the graph that goes into int8 quantization: they change how ONNX Runtime lays out
its tensors, never what the model computes (the lite model's int8 outputs stay bit-identical).

ONNX Runtime runs int8 convolutions channels-last (NHWC) and DepthToSpace only channels-first
(NCHW). So each `Conv -> Relu -> DepthToSpace(CRD)` of LiteUNet's up-sampling path cost a Transpose
to NCHW, a DepthToSpace that moves single bytes (CRD interleaves values), a Transpose of the skip
to NCHW for the Concat and one back to NHWC after it: about a fifth of the lite int8 model's kernel
time on the camera field (docs/edge-bench.md, "Where the int8 time went").

- `channels_last_depth_to_space` reorders the producing convolution's output channels from
  (c, i, j) to (i, j, c) and spells the DepthToSpace as Transpose(NCHW->NHWC) / Reshape /
  Transpose / Reshape / Transpose(NHWC->NCHW). ORT's transpose optimiser cancels the outer
  Transposes against the ones its layout transformer adds and moves the others through the
  Concat, so what remains is one Transpose that copies runs of 2C contiguous bytes.
- `shapes_of_quantized` lets Shape read the quantized tensor: the QDQ quantizer makes Shape read
  the float copy, which ORT then computes (with a Transpose back to NCHW) only for its dimensions.

The fp32 file keeps the exported graph: on ORT's fp32 path (NCHWc convolutions) the rewrite is a
few per cent slower.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.contracts.errors import ModelError


def _producer(graph: Any, name: str) -> Any | None:
    return next((n for n in graph.node if name in n.output), None)


def _consumers(graph: Any, name: str) -> list[Any]:
    return [n for n in graph.node if name in n.input]


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _rewritable_conv(graph: Any, d2s: Any) -> Any | None:
    """The Conv with constant weights whose output feeds only this DepthToSpace (through an optional Relu)."""
    source = _producer(graph, d2s.input[0])
    if source is not None and source.op_type == "Relu" and len(_consumers(graph, source.output[0])) == 1:
        source = _producer(graph, source.input[0])
    if source is None or source.op_type != "Conv" or len(_consumers(graph, source.output[0])) != 1:
        return None
    initializers = {i.name for i in graph.initializer}
    # its weights are reordered in place: they must be constants that no other node reads
    if any(name not in initializers or len(_consumers(graph, name)) != 1 for name in source.input[1:]):
        return None
    return source


def channels_last_depth_to_space(model: Any) -> tuple[Any, int]:
    """Rewrite every `Conv [-> Relu] -> DepthToSpace(CRD)` in place (see the module docstring);
    returns the model and the number of DepthToSpace nodes rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    rewritten = 0
    for d2s in [n for n in graph.node if n.op_type == "DepthToSpace"]:
        mode = _attr(d2s, "mode", b"DCR")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        conv = _rewritable_conv(graph, d2s)
        if mode != "CRD" or conv is None:
            continue
        b = int(_attr(d2s, "blocksize", 0))
        w = numpy_helper.to_array(weights[conv.input[1]])
        if w.shape[0] % (b * b):
            raise ModelError(f"{d2s.name}: {w.shape[0]} channels do not divide into {b}x{b} blocks")
        c = w.shape[0] // (b * b)
        # new channel (i, j, c) reads old channel (c, i, j)
        order = np.arange(w.shape[0]).reshape(c, b, b).transpose(1, 2, 0).reshape(-1)
        for index in range(1, len(conv.input)):
            tensor = weights[conv.input[index]]
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor)[order], tensor.name))

        x, y, stem = d2s.input[0], d2s.output[0], d2s.name or f"depth_to_space_{rewritten}"
        names = {k: f"{stem}/{k}" for k in ("nhwc", "shape", "target", "split", "moved", "merged",
                                            "mul", "div", "block_shape")}
        graph.initializer.extend([
            numpy_helper.from_array(np.array([1, b, b, 1], dtype=np.int64), names["mul"]),
            numpy_helper.from_array(np.array([1, 1, 1, b * b], dtype=np.int64), names["div"]),
            numpy_helper.from_array(np.array([0, 0, 0, b, -1], dtype=np.int64), names["block_shape"]),
        ])
        nodes = [
            helper.make_node("Transpose", [x], [names["nhwc"]], perm=[0, 2, 3, 1], name=f"{stem}/to_nhwc"),
            helper.make_node("Shape", [names["nhwc"]], [names["shape"]], name=f"{stem}/shape"),
            helper.make_node("Mul", [names["shape"], names["mul"]], [f"{names['target']}_mul"], name=f"{stem}/mul"),
            helper.make_node("Div", [f"{names['target']}_mul", names["div"]], [names["target"]], name=f"{stem}/div"),
            helper.make_node("Reshape", [names["nhwc"], names["block_shape"]], [names["split"]], name=f"{stem}/split"),
            helper.make_node("Transpose", [names["split"]], [names["moved"]], perm=[0, 1, 3, 2, 4], name=f"{stem}/move"),
            helper.make_node("Reshape", [names["moved"], names["target"]], [names["merged"]], name=f"{stem}/merge"),
            helper.make_node("Transpose", [names["merged"]], [y], perm=[0, 3, 1, 2], name=f"{stem}/to_nchw"),
        ]
        position = list(graph.node).index(d2s)
        graph.node.remove(d2s)
        for offset, node in enumerate(nodes):
            graph.node.insert(position + offset, node)
        rewritten += 1
    return model, rewritten


def shapes_of_quantized(model: Any) -> tuple[Any, int]:
    """Point every Shape that reads a DequantizeLinear output at the DequantizeLinear's input
    (same shape) and drop DequantizeLinears left without readers; returns the model and the
    number of Shapes moved.

    The QDQ quantizer makes every reader of a quantized tensor read its float copy, Shape included;
    ORT then computes that float copy (and, in a channels-last graph, a Transpose back to NCHW
    before it) only to read its dimensions.
    """
    graph = model.graph
    dequantized = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    moved = 0
    for node in graph.node:
        if node.op_type == "Shape" and node.input[0] in dequantized:
            node.input[0] = dequantized[node.input[0]].input[0]
            moved += 1
    read = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    for dq in dequantized.values():
        if dq.output[0] not in read:
            graph.node.remove(dq)
    return model, moved
