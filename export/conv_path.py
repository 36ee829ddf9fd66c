"""Which of ONNX Runtime's int8 convolution kernels a quantized model runs: a rewrite of its weights
that changes the kernels, never the products.

ONNX Runtime runs a QLinearConv whose weight zero points are all 0 (the symmetric weights
`export.quantize` makes) with its direct "symmetric" convolution kernels, and any other one as
an im2col copy and the quantized GEMM that MatMulInteger uses (on a CPU with AMX, its tile
kernels). Which is faster depends on the shapes and the CPU: on the development VM (AMX) the
direct kernels win for the lite network's 32-256-channel convolutions and the GEMM wins for
128-512-channel ones at a quarter of the input's resolution and below (benchmarks.conv_ceiling,
benchmarks.arch_candidates). `gemm_weights` moves a model to the GEMM path by shifting every
convolution's int8 weights by -1 and setting their zero point to -1: each weight's value
(w - zero point) and so every product stays what it was, bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CONV_PATHS = ("direct", "gemm")
"""`direct`: symmetric weights as quantized (ONNX Runtime's direct kernels); `gemm`: shifted (im2col + GEMM)."""


def gemm_weights(model: Any) -> int:
    """In place on a QDQ model (onnx ModelProto): every convolution weight's DequantizeLinear
    with int8 weights and all-zero zero points gets the weights shifted by -1 and zero points of
    -1. A tensor holding -128 (which cannot shift) or read by anything else is left alone.
    Returns how many weight tensors were moved."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    conv_weights = {node.input[1] for node in graph.node if node.op_type == "Conv" and len(node.input) > 1}
    moved = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.output[0] not in conv_weights or len(node.input) < 3:
            continue
        weights, zero = initializers.get(node.input[0]), initializers.get(node.input[2])
        if weights is None or zero is None or readers.get(weights.name) != 1 or readers.get(zero.name) != 1:
            continue
        w, z = numpy_helper.to_array(weights), numpy_helper.to_array(zero)
        if w.dtype != np.int8 or np.any(z != 0) or w.min() < -127:
            continue
        weights.CopyFrom(numpy_helper.from_array((w.astype(np.int16) - 1).astype(np.int8), weights.name))
        zero.CopyFrom(numpy_helper.from_array(np.full(z.shape, -1, np.int8), zero.name))
        moved += 1
    return moved


def gemm_weights_file(source: str | Path, target: str | Path) -> int:
    """`gemm_weights` on a model file, written to `target` (which may be `source`)."""
    import onnx

    model = onnx.load(str(source))
    moved = gemm_weights(model)
    onnx.save(model, str(target))
    return moved
