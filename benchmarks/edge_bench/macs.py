"""Multiply-accumulate count of an ONNX model at a given input size, without the `onnx` package.

The model is run once in ONNX Runtime with graph optimisations off and profiling on; the profile
records every executed node's operator and its input/output shapes, from which Conv, ConvTranspose,
MatMul and Gemm MACs follow by shape arithmetic. This works on a device install (no `onnx`), for
dynamic input sizes and for QDQ int8 graphs (whose Conv nodes read dequantised weights), and it
counts exactly what runs at that size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.edge_bench.profile import profile_events

Shape = list[int]


@dataclass(frozen=True)
class MacCount:
    """MACs of one inference at `input_shape`, in total and per operator type."""

    input_shape: list[int]
    total: int
    by_op: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"input_shape": self.input_shape, "total": self.total, "by_op": dict(self.by_op)}


def node_macs(op: str, inputs: list[Shape], outputs: list[Shape]) -> int:
    """MACs of one node from its operator and tensor shapes; 0 for operators that do no MACs."""
    if not outputs:
        return 0
    out = outputs[0]
    if op in ("Conv", "FusedConv", "ConvInteger", "QLinearConv"):
        weight = inputs[3] if op == "QLinearConv" else inputs[1]
        # weight is [out_channels, in_channels / group, *kernel]: every output element needs
        # (in_channels / group) * prod(kernel) MACs, whatever the group count.
        return math.prod(out) * math.prod(weight[1:])
    if op == "ConvTranspose":
        # weight is [in_channels, out_channels / group, *kernel]: each input element is scattered.
        return math.prod(inputs[0]) * math.prod(inputs[1][1:])
    if op in ("MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul"):
        return math.prod(out) * inputs[0][-1]
    if op == "Gemm":
        rows = out[0] if out else 1
        return math.prod(out) * (math.prod(inputs[0]) // max(rows, 1))
    return 0


def _shapes(entries: list[dict[str, list[int]]] | None) -> list[Shape]:
    """Profile shape entries look like [{"float": [1, 3, 64, 64]}, ...]."""
    return [list(next(iter(entry.values()))) for entry in entries or [] if entry]


def macs_from_profile(events: list[dict[str, Any]]) -> tuple[int, dict[str, int]]:
    """Sum node MACs over an ORT profile's node events."""
    by_op: dict[str, int] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or "op_name" not in args:
            continue
        op = args["op_name"]
        macs = node_macs(op, _shapes(args.get("input_type_shape")), _shapes(args.get("output_type_shape")))
        if macs:
            by_op[op] = by_op.get(op, 0) + macs
    return sum(by_op.values()), by_op


def count_macs(model_path: str | Path, height: int, width: int) -> MacCount:
    """MACs of one batch-1 inference of `model_path` at height x width (graph as written, unoptimised)."""
    shape, events = profile_events(model_path, height, width, optimization="disabled", threads=1, runs=1)
    total, by_op = macs_from_profile(events)
    return MacCount(input_shape=shape, total=total, by_op=by_op)
