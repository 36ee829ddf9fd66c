"""How much of the int8 matrix-multiply peak ONNX Runtime's int8 convolutions reach at the network's shapes.

edge-bench divides the network's achieved MAC/s by the rate of one large MatMulInteger. That
matmul and a convolution need not run the same kernels: ONNX Runtime gives a QLinearConv whose
weight zero points are all 0 (symmetric int8 weights, as `export.quantize` makes them) its direct
"symmetric" convolution kernels, and any other QLinearConv an im2col copy and the quantized GEMM
MatMulInteger uses (on a CPU with AMX, its tile kernels). This benchmark times one QLinearConv of
each of the model's convolution shapes at the field's input, both ways, channels last as the
optimised model runs them (ONNX Runtime's NHWC form, so no transposes are timed), in one run with
the matmul peak, so the ceiling that these kernels put on the network's share of the peak is measured, not
guessed. The weights are random: the time of an int8 kernel does not depend on the values. The
second way keeps the arithmetic exact (weights shifted by -1 with a zero point of -1).

    python -m benchmarks.conv_ceiling                                   # the shipped (lite) model, camera field
    python -m benchmarks.conv_ceiling --model models/v3/segmentation.int8.onnx --input 304x400

Prints per shape: MACs, time and GMAC/s of each kernel path, and the share of the matmul peak;
then the sum over the model's convolutions with the faster path for each, against the peak, and
the load average before and after. Needs `onnx` (the dev install).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.edge_bench.peak import ort_matmul_peak
from benchmarks.edge_bench.timing import measure

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "segmentation.int8.onnx"


@dataclass(frozen=True)
class ConvShape:
    """One convolution as it runs: channels, square kernel, stride and output size."""

    cin: int
    cout: int
    kernel: int
    stride: int
    out_h: int
    out_w: int

    @property
    def macs(self) -> int:
        return self.cin * self.cout * self.kernel * self.kernel * self.out_h * self.out_w


REFERENCE = ConvShape(256, 256, 3, 1, 64, 64)
"""A wide convolution for comparison: far more work per input byte than the network's."""


def model_conv_shapes(model_path: Path, input_hw: tuple[int, int]) -> list[ConvShape]:
    """Every Conv of a QDQ model (weights read through their DequantizeLinear) with its output size
    at `input_hw`, by ONNX shape inference; grouped convolutions are left out (the network has none)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(model_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 3, *input_hw)):
        dim.ClearField("dim_param")
        dim.dim_value = value
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.output)}
    weights = {i.name: numpy_helper.to_array(i).shape for i in model.graph.initializer}
    dequantized = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("group", 1) != 1:
            continue
        cout, cin, k, _ = weights[dequantized.get(node.input[1], node.input[1])]
        _, _, oh, ow = shapes[node.output[0]]
        out.append(ConvShape(cin, cout, k, attrs.get("strides", [1])[0], oh, ow))
    return out


def qlinearconv_model(shape: ConvShape, symmetric: bool, seed: int = 0) -> bytes:
    """One QLinearConv (uint8 input and output, per-channel int8 weights) of `shape`: weight zero
    points 0 (`symmetric`) or -1 with the weights shifted to match (the same products)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.integers(-127, 128, (shape.cout, shape.cin, shape.kernel, shape.kernel)).astype(np.int8)
    zero = 0 if symmetric else -1
    if not symmetric:
        weights = (weights.astype(np.int16) - 1).astype(np.int8)
    h, w = shape.out_h * shape.stride, shape.out_w * shape.stride
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
             numpy_helper.from_array(weights, "w"),
             numpy_helper.from_array(np.full(shape.cout, 1e-3, np.float32), "w_scale"),
             numpy_helper.from_array(np.full(shape.cout, zero, np.int8), "w_zero"),
             numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "y_zero")]
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zero", "w", "w_scale", "w_zero", "y_scale", "y_zero"],
                            ["y"], domain="com.microsoft", channels_last=1, pads=[shape.kernel // 2] * 4,
                            strides=[shape.stride] * 2)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, h, w, shape.cin])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)]).SerializeToString()


def time_conv(shape: ConvShape, symmetric: bool, threads: int, runs: int, folder: Path) -> float:
    """p50 ms of one QLinearConv of `shape` in the project's CPU session at `threads` threads."""
    from runtime.inference.session import SessionOptions, create_session

    path = folder / f"conv-{shape.cin}-{shape.cout}-{shape.kernel}-{shape.out_h}x{shape.out_w}-{int(symmetric)}.onnx"
    path.write_bytes(qlinearconv_model(shape, symmetric))
    session = create_session(path, SessionOptions(providers=("cpu",), intra_op_threads=threads, warmup=False))
    x = np.random.default_rng(1).integers(0, 256, (1, shape.out_h * shape.stride, shape.out_w * shape.stride, shape.cin),
                                          dtype=np.uint8)
    return measure(lambda: session.run(None, {"x": x}), warmup=3, runs=runs).p50


def ceiling(model: Path, input_hw: tuple[int, int], threads: int, runs: int) -> dict[str, Any]:
    """The report: the matmul peak, each distinct convolution shape both ways, and the model's sum."""
    load_before = os.getloadavg()
    peak = ort_matmul_peak("int8", threads, 1024, runs=max(10, runs))
    shapes = model_conv_shapes(model, input_hw)
    counts = Counter(shapes)
    rows = []
    with tempfile.TemporaryDirectory(prefix="conv-ceiling-") as tmp:
        for shape in [*counts, REFERENCE]:
            times = {path: time_conv(shape, path == "symmetric", threads, runs, Path(tmp))
                     for path in ("symmetric", "im2col_gemm")}
            rows.append({**asdict(shape), "in_model": counts.get(shape, 0), "macs": shape.macs,
                         "ms": times, "gmacs_per_s": {k: shape.macs / v / 1e6 for k, v in times.items()},
                         "of_peak": {k: shape.macs / v / 1e6 / peak.gmacs_per_s for k, v in times.items()}})
    in_model = [r for r in rows if r["in_model"]]
    macs = sum(r["macs"] * r["in_model"] for r in in_model)
    sums = {path: sum(r["ms"][path] * r["in_model"] for r in in_model) for path in ("symmetric", "im2col_gemm")}
    best = sum(min(r["ms"].values()) * r["in_model"] for r in in_model)
    totals = {name: {"ms": ms, "gmacs_per_s": macs / ms / 1e6, "of_peak": macs / ms / 1e6 / peak.gmacs_per_s}
              for name, ms in {**sums, "faster_of_the_two": best}.items()}
    return {"model": str(model), "input_hw": list(input_hw), "threads": threads, "peak": peak.to_dict(),
            "convolutions": rows, "model_convolutions": {"count": sum(counts.values()), "macs": macs, **totals},
            "load_average": {"before": list(load_before), "after": list(os.getloadavg())}}


def render(report: dict[str, Any]) -> str:
    peak = report["peak"]
    lines = [f"int8 matmul peak (MatMulInteger 1024^3, {report['threads']} threads): {peak['gmacs_per_s']:.0f} GMAC/s",
             f"{'in x out, k, stride, output':34s} {'n':>2s} {'MMAC':>7s}   {'symmetric (direct)':>24s}   {'im2col + GEMM':>24s}"]
    for r in report["convolutions"]:
        name = f"{r['cin']} x {r['cout']}, {r['kernel']}x{r['kernel']}, /{r['stride']}, {r['out_h']}x{r['out_w']}"
        cells = [f"{r['ms'][p]:6.3f} ms {r['gmacs_per_s'][p]:5.0f} {100 * r['of_peak'][p]:4.0f} %" for p in ("symmetric", "im2col_gemm")]
        tag = f"{r['in_model']:2d}" if r["in_model"] else " -"
        lines.append(f"{name:34s} {tag} {r['macs'] / 1e6:7.1f}   {cells[0]:>24s}   {cells[1]:>24s}")
    m = report["model_convolutions"]
    lines.append(f"the model's {m['count']} convolutions ({m['macs'] / 1e9:.2f} GMAC at {report['input_hw'][0]}x{report['input_hw'][1]}):")
    for name in ("symmetric", "im2col_gemm", "faster_of_the_two"):
        t = m[name]
        lines.append(f"  {name:18s} {t['ms']:6.2f} ms  {t['gmacs_per_s']:5.0f} GMAC/s  {100 * t['of_peak']:4.1f} % of the peak")
    before, after = report["load_average"]["before"], report["load_average"]["after"]
    lines.append(f"load average (1/5/15 min): before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, "
                 f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=DEFAULT_MODEL,
              show_default=True, help="int8 QDQ model whose convolution shapes are timed.")
@click.option("--input", "input_hw", default="304x400", show_default=True,
              help="Network input HxW (the camera field's, calibrated, by default).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--runs", type=click.IntRange(min=3), default=30, show_default=True, help="Timed runs per convolution.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def main(model: Path, input_hw: str, threads: int, runs: int, as_json: bool) -> None:
    """Time the model's int8 convolutions on both of ONNX Runtime's kernel paths against the matmul peak."""
    try:
        h, w = (int(v) for v in input_hw.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{input_hw!r} is not HxW, e.g. 304x400", param_hint="--input") from None
    report = ceiling(model, (h, w), threads, runs)
    click.echo(json.dumps(report, indent=1) if as_json else render(report))


if __name__ == "__main__":
    main()
