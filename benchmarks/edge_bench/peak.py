"""The machine's own matrix-multiply peak, measured in the same run as the model.

A model's achieved MAC/s means little on its own; divided by what this CPU reaches on a large
dense matrix multiply it says how much of the hardware the model uses. Three kernels:

- numpy float32 GEMM (the BLAS numpy was built with; all cores, thread count not controlled),
- ONNX Runtime float32 MatMul and
- ONNX Runtime int8 MatMulInteger (uint8 x int8 -> int32: MLAS's quantized GEMM, with AMX tiles
  where the CPU has them; an int8 Conv with symmetric weights, as the shipped models have, runs
  ONNX Runtime's direct convolution kernels instead, and benchmarks/conv_ceiling.py measures what
  those reach at the network's shapes),

the last two at a given intra-op thread count, measured in the sweep right after the models of
the same thread count, so the model and its reference see the same machine load.

The ONNX graphs hold B as a constant (`ConstantOfShape`, folded when the session is created), as a
model holds its weights, so ONNX Runtime packs it once the way it packs a convolution's weights.
Fed as an input, B was packed again on every run, and on a 2-core AVX-512 VNNI machine the int8
"peak" read 285 GMAC/s where the kernel reaches 390-465: a model then showed 96 % of a peak it was
far from. The tiny graphs are stored in `assets/` for the sizes in `STORED_SIZES`, so a device
without the `onnx` package can still run them; `write_matmul_assets` regenerates them (needs `onnx`).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.edge_bench.timing import measure, summarize
from runtime.contracts.errors import ModelError

ASSETS = Path(__file__).resolve().parent / "assets"
STORED_SIZES: tuple[int, ...] = (256, 512, 1024, 2048)
"""Matrix sides with a stored graph; another side needs `onnx` to build its graph."""


def matmul_asset(dtype: str, size: int) -> Path:
    """Where the stored graph of one kernel and matrix side lives."""
    return ASSETS / f"matmul_{dtype}_{size}.onnx"


@dataclass(frozen=True)
class Peak:
    """A measured matrix-multiply rate."""

    kernel: str
    dtype: str
    size: int
    threads: int | None
    p50_ms: float
    gmacs_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_matmul_model(dtype: str, size: int) -> Any:
    """The ONNX graph for one kernel, A fed and B a size x size constant of ones:
    Y = MatMul(A, B) (fp32) or MatMulInteger(A:u8, B:s8) (int8). The GEMM's time does not depend
    on B's values; that B is a constant is what lets ONNX Runtime pack it once."""
    from onnx import TensorProto, helper, numpy_helper

    if dtype == "fp32":
        op, a_type, b_type, y_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT
    elif dtype == "int8":
        op, a_type, b_type, y_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32
    else:
        raise ValueError(f"unknown matmul dtype {dtype!r}; known: fp32, int8")
    b_shape = numpy_helper.from_array(np.array([size, size], dtype=np.int64), "B_shape")
    nodes = [
        helper.make_node("ConstantOfShape", ["B_shape"], ["B"], value=helper.make_tensor("one", b_type, [1], [1])),
        helper.make_node(op, ["A", "B"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        f"matmul_{dtype}_{size}",
        [helper.make_tensor_value_info("A", a_type, ["M", size])],
        [helper.make_tensor_value_info("Y", y_type, ["M", size])],
        [b_shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="smearscope-edge-bench")
    model.ir_version = 8
    return model


def write_matmul_assets() -> None:
    """Regenerate the stored graphs (run after changing `build_matmul_model`)."""
    import onnx

    for old in ASSETS.glob("matmul_*.onnx"):
        old.unlink()
    for dtype in KERNELS:
        for size in STORED_SIZES:
            onnx.save(build_matmul_model(dtype, size), str(matmul_asset(dtype, size)))


def _matrix(dtype: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random size x size operand: float32, or uint8 (what MatMulInteger's A is, as a quantized
    model's activations are)."""
    if dtype == "fp32":
        return rng.standard_normal((size, size), dtype=np.float32)
    return rng.integers(0, 256, (size, size), dtype=np.uint8)


def _rate(size: int, p50_ms: float) -> float:
    return size**3 / (p50_ms / 1000.0) / 1e9


def numpy_gemm_peak(size: int = 1024, *, warmup: int = 2, runs: int = 10) -> Peak:
    """float32 GEMM through numpy's BLAS."""
    rng = np.random.default_rng(0)
    a, b = _matrix("fp32", size, rng), _matrix("fp32", size, rng)
    out = np.empty((size, size), dtype=np.float32)
    stats = measure(lambda: np.matmul(a, b, out=out), warmup=warmup, runs=runs)
    return Peak("numpy-gemm", "fp32", size, None, stats.p50, _rate(size, stats.p50))


KERNELS = {"fp32": "ort-matmul", "int8": "ort-matmulinteger"}


def matmul_model_path(dtype: str, size: int) -> Path:
    """The stored graph, or (another size, or an installation without it) one built now with
    `onnx` in a temp folder."""
    path = matmul_asset(dtype, size)
    if path.is_file():
        return path
    try:
        import onnx
    except ImportError:
        raise ModelError(f"no stored {dtype} matmul graph of side {size} (stored: {', '.join(map(str, STORED_SIZES))}) "
                         "and onnx is not installed to build one") from None
    built = Path(tempfile.mkdtemp(prefix="edge-bench-matmul-")) / path.name
    onnx.save(build_matmul_model(dtype, size), str(built))
    return built


def ort_matmul_call(dtype: str, threads: int, size: int) -> Callable[[], Any]:
    """One size^3 MatMul (fp32) or MatMulInteger (int8) in ORT's CPU provider at `threads` threads."""
    from runtime.inference.session import SessionOptions, create_session

    options = SessionOptions(providers=("cpu",), intra_op_threads=threads, warmup=False)
    session = create_session(matmul_model_path(dtype, size), options)
    feeds = {"A": _matrix(dtype, size, np.random.default_rng(0))}  # B is the graph's constant
    return lambda: session.run(None, feeds)


def peak_from_samples(dtype: str, threads: int, size: int, samples_ms: list[float]) -> Peak:
    p50 = summarize(samples_ms).p50
    return Peak(KERNELS[dtype], dtype, size, threads, p50, _rate(size, p50))


def ort_matmul_peak(dtype: str, threads: int, size: int = 1024, *, warmup: int = 2, runs: int = 10) -> Peak:
    """The ORT matmul rate measured on its own."""
    call = ort_matmul_call(dtype, threads, size)
    stats = measure(call, warmup=warmup, runs=runs)
    return Peak(KERNELS[dtype], dtype, size, threads, stats.p50, _rate(size, stats.p50))
