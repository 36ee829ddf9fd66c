"""MACs and operator times read from ONNX Runtime's profile of real graphs; the stored matmul graphs."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.edge_bench.macs import count_macs
from benchmarks.edge_bench.peak import STORED_SIZES, build_matmul_model, matmul_asset, matmul_model_path, ort_matmul_peak
from benchmarks.edge_bench.profile import op_times, profile_events
from runtime.inference.session import SessionOptions, create_session

onnx = pytest.importorskip("onnx")


def _conv_graph(path, groups: int = 1):
    """Conv 3x3 (4 -> 8 channels, padded) -> ReLU -> depthwise-or-grouped Conv 3x3 (8 -> 8)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 8 // groups, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1], group=groups, strides=[2, 2]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("groups", [1, 8])
def test_count_macs_matches_hand_arithmetic(tmp_path, groups):
    path = _conv_graph(tmp_path / "g.onnx", groups)
    h, w = 32, 48
    expected = h * w * 8 * (4 * 9) + (h // 2) * (w // 2) * 8 * ((8 // groups) * 9)
    count = count_macs(path, h, w)
    assert count.total == expected
    assert count.by_op == {"Conv": expected}
    assert count.input_shape == [1, 4, h, w]


def test_op_times_cover_the_executed_graph(tmp_path):
    path = _conv_graph(tmp_path / "g.onnx")
    _, events = profile_events(path, 64, 64, optimization="disabled", threads=1, runs=3)
    rows = op_times(events, runs=3)
    assert {r.op for r in rows} == {"Conv", "Relu"}
    assert next(r for r in rows if r.op == "Conv").nodes == 2
    assert sum(r.share for r in rows) == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_stored_matmul_graphs_are_what_the_builder_makes(dtype):
    for size in STORED_SIZES:
        assert onnx.load(str(matmul_asset(dtype, size))).graph == build_matmul_model(dtype, size).graph
    peak = ort_matmul_peak(dtype, threads=1, size=256, warmup=1, runs=3)
    assert peak.size == 256
    assert peak.gmacs_per_s == pytest.approx(256**3 / (peak.p50_ms / 1000.0) / 1e9)


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_the_peak_graphs_b_is_a_constant_the_runtime_can_pack_once(dtype, tmp_path):
    """B must reach the GEMM as an initializer (as a model's weights do), not be rebuilt per run."""
    optimized = tmp_path / "optimized.onnx"
    options = SessionOptions(providers=("cpu",), intra_op_threads=1, warmup=False, optimized_model_path=str(optimized))
    session = create_session(matmul_model_path(dtype, 256), options)
    graph = onnx.load(str(optimized)).graph
    assert [node.op_type for node in graph.node] == ["MatMul" if dtype == "fp32" else "MatMulInteger"]
    assert "B" in {init.name for init in graph.initializer}
    a = np.arange(2 * 256, dtype=np.float32).reshape(2, 256) % 7
    feeds = {"A": a if dtype == "fp32" else a.astype(np.uint8)}
    (y,) = session.run(None, feeds)
    assert y.shape == (2, 256)
    np.testing.assert_array_equal(y, np.repeat(a.sum(axis=1, keepdims=True), 256, axis=1))


def test_a_side_without_a_stored_graph_is_built_with_onnx():
    peak = ort_matmul_peak("int8", threads=1, size=96, warmup=1, runs=2)
    assert peak.size == 96 and peak.gmacs_per_s > 0
