"""benchmarks.conv_ceiling: the shapes it times are the model's, and its two kernel paths compute the same thing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from benchmarks.conv_ceiling import DEFAULT_MODEL, ConvShape, model_conv_shapes, qlinearconv_model  # noqa: E402
from benchmarks.edge_bench.macs import count_macs  # noqa: E402
from runtime.inference.session import SessionOptions, create_session  # noqa: E402


def test_the_model_shapes_hold_every_convolution_mac_the_profile_counts() -> None:
    """Shape inference on the graph and ONNX Runtime's executed-node profile (edge-bench's MAC
    count) agree on the lite model's convolution work at the camera field's input."""
    shapes = model_conv_shapes(DEFAULT_MODEL, (304, 400))
    profiled = count_macs(DEFAULT_MODEL, 304, 400)
    assert len(shapes) == 19
    assert sum(s.macs for s in shapes) == profiled.by_op["Conv"] == profiled.total
    assert ConvShape(3, 32, 3, 2, 152, 200) in shapes  # the stride-2 stem on the image


@pytest.mark.parametrize("shape", [ConvShape(16, 24, 3, 1, 20, 28), ConvShape(16, 32, 3, 2, 10, 14),
                                   ConvShape(32, 8, 1, 1, 12, 12)])
def test_both_kernel_paths_give_the_same_output(tmp_path: Path, shape: ConvShape) -> None:
    """Symmetric weights (zero point 0) and the same weights shifted by -1 with zero point -1 are
    the same products: the direct and the im2col + GEMM kernels must agree to the last bit (or one
    step of rounding)."""
    x = np.random.default_rng(3).integers(0, 256, (1, shape.out_h * shape.stride, shape.out_w * shape.stride, shape.cin),
                                          dtype=np.uint8)
    outputs = []
    for symmetric in (True, False):
        path = tmp_path / f"conv-{int(symmetric)}.onnx"
        path.write_bytes(qlinearconv_model(shape, symmetric))
        session = create_session(path, SessionOptions(providers=("cpu",), intra_op_threads=1, warmup=False))
        (y,) = session.run(None, {"x": x})
        assert y.shape == (1, shape.out_h, shape.out_w, shape.cout)
        outputs.append(y.astype(np.int16))
    assert np.abs(outputs[0] - outputs[1]).max() <= 1
    assert np.mean(outputs[0] != outputs[1]) < 0.01
    assert outputs[0].std() > 10  # not saturated: the comparison sees real values
