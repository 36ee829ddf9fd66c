"""benchmarks.arch_candidates: candidates exported and quantized as the shipped models are, timed
with ONNX Runtime against the matmul peak; the GEMM-path weights change the kernels, not the products."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import arch_candidates as candidates
from export.conv_path import gemm_weights_file
from export.quantize import PreprocessedFrames
from runtime.contracts.errors import DataError
from runtime.inference.session import SessionOptions, create_session

TINY = candidates.Candidate("tiny-stem4", {"base_width": 8, "depth": 1, "stem_stride": 4}, "a test network")


@pytest.fixture(scope="module")
def tiny_int8(tmp_path_factory):
    return candidates.build_int8(TINY, tmp_path_factory.mktemp("candidates"))


def _outputs(path, tensor):
    session = create_session(path, SessionOptions(providers=("cpu",), intra_op_threads=1, warmup=False))
    return session.run(None, {session.get_inputs()[0].name: tensor})


def test_the_field_tensor_is_the_camera_field_at_the_shipped_scale():
    tensor = candidates.field_tensor(16)
    assert tensor.shape == (1, 3, 304, 400) and tensor.dtype == np.float32
    assert candidates.field_tensor(32).shape[2:] == (320, 416)  # padded to a stride-32 network's multiple


def test_gemm_weights_keep_every_output_bit_for_bit(tiny_int8, tmp_path):
    path, tensor = tiny_int8
    shifted = tmp_path / "gemm.onnx"
    count = gemm_weights_file(path, shifted)
    assert count >= 4  # every quantized convolution of the tiny network (the image's stays float)
    for before, after in zip(_outputs(path, tensor), _outputs(shifted, tensor)):
        assert np.array_equal(before, after)


def test_a_run_reports_every_model_and_its_share_of_the_peak():
    report = candidates.run([TINY], threads=1, warmup=0, runs=2, gemm=True)
    names = [m["name"] for m in report["models"]]
    assert names == ["shipped (trained)", "shipped (trained), GEMM", "tiny-stem4", "tiny-stem4, GEMM"]
    shipped = report["models"][0]
    assert tuple(shipped["input_hw"]) == (304, 400)
    assert abs(shipped["gmac"] - 4.28) < 0.01  # the shipped network's MACs at the camera field
    for model in report["models"]:
        assert model["p50_ms"] > 0 and model["gmacs_per_s"] == pytest.approx(model["gmac"] / model["p50_ms"] * 1000)
        assert model["share_of_peak"] == pytest.approx(model["gmacs_per_s"] / report["peak"]["gmacs_per_s"])
    assert "tiny-stem4" in candidates.render(report) and "load average" in candidates.render(report)


def test_a_reader_needs_tensors():
    with pytest.raises(DataError, match="no calibration frames"):
        PreprocessedFrames.from_tensors([])
