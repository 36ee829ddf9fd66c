"""Every calibration method `smearscope export` offers quantizes frames of different sizes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from export.onnx_export import export_segmentation
from export.quantize import GraphChoices, ImageFrame, PreprocessedFrames, quantize_int8
from runtime.inference.preprocess import PreprocessParams
from training.unet import build_model

PARAMS = PreprocessParams(target_rbc_diameter_px=24.0)


def _frames() -> list[ImageFrame]:
    rng = np.random.default_rng(0)
    return [ImageFrame(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), key=f"f{i}", um_per_px=0.3)
            for i, (h, w) in enumerate([(120, 160), (96, 200), (150, 130)])]


def test_common_size_crop_keeps_the_stride_and_the_centre():
    reader = PreprocessedFrames(_frames(), PARAMS)
    sizes = {t.shape[2:] for t in reader.tensors}
    assert len(sizes) > 1  # the frames really differ in size
    cropped = reader.cropped_to_common_size()
    h, w = min(s[0] for s in sizes), min(s[1] for s in sizes)
    assert {t.shape[2:] for t in cropped.tensors} == {(h, w)} and h % PARAMS.stride == 0 and w % PARAMS.stride == 0
    big = reader.tensors[0]
    y0, x0 = (big.shape[2] - h) // 2, (big.shape[3] - w) // 2
    assert np.array_equal(cropped.tensors[0], big[:, :, y0:y0 + h, x0:x0 + w])
    assert cropped.sha256 != reader.sha256  # the card's hash names what the calibrator saw


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_each_calibration_method_quantizes_frames_of_different_sizes(tmp_path, method):
    torch.manual_seed(0)
    model = build_model("lite_unet", base_width=4, depth=2, centre_head=True).eval()
    fp32 = export_segmentation(model, PARAMS, tmp_path / "m.fp32.onnx")
    info = quantize_int8(fp32, tmp_path / "m.int8.onnx", PreprocessedFrames(_frames(), PARAMS), method)
    assert info["calibration_method"] == method
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.int8.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


def test_the_gemm_convolution_path_keeps_every_output_and_is_recorded(tmp_path):
    from export.conv_path import gemm_weights
    from runtime.contracts.errors import ConfigError
    from runtime.inference.session import SessionOptions, create_session

    torch.manual_seed(0)
    model = build_model("lite_unet", base_width=4, depth=2, centre_head=True).eval()
    fp32 = export_segmentation(model, PARAMS, tmp_path / "m.fp32.onnx")
    reader = PreprocessedFrames(_frames(), PARAMS)
    direct = quantize_int8(fp32, tmp_path / "direct.onnx", reader)
    gemm = quantize_int8(fp32, tmp_path / "gemm.onnx", reader, choices=GraphChoices(conv_path="gemm"))
    assert direct["conv_path"] == {"module": "export.conv_path", "path": "direct", "weight_tensors_moved": 0}
    assert gemm["conv_path"]["path"] == "gemm" and gemm["conv_path"]["weight_tensors_moved"] >= 8
    runs = []
    for name in ("direct.onnx", "gemm.onnx"):
        session = create_session(tmp_path / name, SessionOptions(providers=("cpu",), intra_op_threads=1, warmup=False))
        runs.append(session.run(None, {"image": reader.tensors[0]}))
    for a, b in zip(*runs):
        assert np.array_equal(a, b)
    assert gemm_weights(onnx.load(str(tmp_path / "gemm.onnx"))) == 0  # moved once: zero points are -1 now
    with pytest.raises(ConfigError, match="convolution path 'fast'"):
        quantize_int8(fp32, tmp_path / "x.onnx", reader, choices=GraphChoices(conv_path="fast"))
