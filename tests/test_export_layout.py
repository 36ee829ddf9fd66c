"""export.layout on the shipped lite model: the rewritten graph computes what the exported one does
(fp32 and int8, on a real bundled frame), and ONNX Runtime's int8 graph keeps no DepthToSpace."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.layout import channels_last_depth_to_space, shapes_of_quantized
from export.quantize import GraphChoices, ImageFrame, PreprocessedFrames, quantize_int8
from runtime.capture.bundled import bundled_frames, bundled_um_per_px
from runtime.contracts.errors import ConfigError
from runtime.contracts.modelcard import load_card
from runtime.inference.preprocess import preprocess
from runtime.inference.session import SessionOptions, create_session

LITE = Path(__file__).resolve().parent.parent / "models"  # the shipped lite network
FP32, INT8 = LITE / "segmentation.fp32.onnx", LITE / "segmentation.int8.onnx"
OPTIONS = SessionOptions(providers=("cpu",), warmup=False, verify_hash=False)


def _frames(count: int) -> list[ImageFrame]:
    return [ImageFrame(f.load(), key=f.name, um_per_px=bundled_um_per_px()) for f in bundled_frames()[:count]]


@pytest.fixture(scope="module")
def frame_tensor() -> np.ndarray:
    frame = _frames(1)[0]
    return preprocess(frame.image, load_card(FP32).preprocess, source=frame.key, **frame.scale_kwargs()).tensor


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = create_session(path, OPTIONS)
    return session.run(None, {session.get_inputs()[0].name: x})


def test_rewritten_fp32_graph_gives_the_exported_outputs_on_a_real_frame(tmp_path, frame_tensor):
    model, rewritten = channels_last_depth_to_space(onnx.load(str(FP32)))
    onnx.checker.check_model(model)
    assert rewritten == 3
    assert "DepthToSpace" not in {n.op_type for n in model.graph.node}
    onnx.save(model, str(tmp_path / "rewritten.onnx"))
    for before, after in zip(_run(FP32, frame_tensor), _run(tmp_path / "rewritten.onnx", frame_tensor)):
        assert before.shape == after.shape
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-5)


def test_int8_with_and_without_the_rewrites_agree_on_a_real_frame(tmp_path, frame_tensor):
    reader = PreprocessedFrames(_frames(2), load_card(FP32).preprocess)
    plain = quantize_int8(FP32, tmp_path / "plain.onnx", reader, choices=GraphChoices(layout_rewrites=False))
    laid_out = quantize_int8(FP32, tmp_path / "laid_out.onnx", reader)
    assert plain["layout_rewrites"] is None
    assert laid_out["layout_rewrites"]["depth_to_space_channels_last"] == 3
    assert laid_out["layout_rewrites"]["shapes_read_quantized"] > 0
    for before, after in zip(_run(tmp_path / "plain.onnx", frame_tensor), _run(tmp_path / "laid_out.onnx", frame_tensor)):
        np.testing.assert_array_equal(after, before)


def test_ort_runs_the_shipped_int8_model_channels_last_without_depth_to_space(tmp_path):
    optimized = tmp_path / "optimized.onnx"
    create_session(INT8, SessionOptions(providers=("cpu",), warmup=False, optimized_model_path=str(optimized)))
    ops = [n.op_type for n in onnx.load(str(optimized)).graph.node]
    assert "DepthToSpace" not in ops
    # the input to NHWC, one block move per up-sampling level, the logits back to NCHW: with the
    # tail in float the two heads (logits, centres) go back one Transpose each, and the image's own
    # convolution runs in float before the first Transpose
    float_tail = (load_card(INT8).quantization.get("left_in_float") or {}).get("output_tail")
    assert ops.count("Transpose") <= (6 if float_tail else 5)
    assert ops.count("QLinearConv") == (18 if float_tail else 19)


def test_shapes_read_the_quantized_tensor():
    model = onnx.load(str(INT8))
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    shapes = [n for n in model.graph.node if n.op_type == "Shape"]
    assert shapes and all(producers.get(n.input[0]) != "DequantizeLinear" for n in shapes)
    assert shapes_of_quantized(model)[1] == 0  # nothing left to move


def test_requantize_refuses_other_calibration_frames(tmp_path):
    from export.requantize import requantize

    for path in LITE.glob("segmentation.*"):
        shutil.copy(path, tmp_path / path.name)
    with pytest.raises(ConfigError, match="calibration frames hash"):
        requantize(tmp_path / INT8.name, _frames(2), log=lambda _msg: None)


def test_requantize_takes_the_shipped_lite_model_calibrated_by_histogram(tmp_path, shared_data):
    """The lite model was calibrated by percentile, whose calibrator sees the frames cropped to a
    common size: the card's hash is of those, and requantize checks the same frames."""
    from export.quantize import frames_from_source
    from export.requantize import requantize
    from training.datasets import build_source

    card = load_card(INT8)
    assert card.quantization["calibration_method"] == "percentile"
    for path in LITE.glob("segmentation.*"):
        shutil.copy(path, tmp_path / path.name)
    frames = frames_from_source(build_source("txl_pbc", shared_data / "txl_pbc", "train"),
                                int(card.quantization["calibration_frames"]))
    new = requantize(tmp_path / INT8.name, frames, log=lambda _msg: None)
    assert new.quantization["requantized_from"]["sha256"] == card.sha256
    assert new.quantization["calibration_set_sha256"] == card.quantization["calibration_set_sha256"]


def test_skip_concatenations_quantize_their_inputs_as_their_output(tmp_path, frame_tensor):
    """export.shared_concat: in the int8 graph every input of a Concat feeding convolutions has the
    Concat output's scale and zero point (ONNX Runtime's QLinearConcat then copies bytes instead of
    mapping each through a table), every convolution stays quantized, the tail's Concat (logits and
    centres) keeps its own ranges, and the outputs stay close to the plain quantization's."""
    from export.shared_concat import concat_overrides
    from export.validate import conv_census

    reader = PreprocessedFrames(_frames(2), load_card(FP32).preprocess)
    quantize_int8(FP32, tmp_path / "plain.onnx", reader, choices=GraphChoices(concat_copies=False, float_nodes=False))
    card_section = quantize_int8(FP32, tmp_path / "copies.onnx", reader)
    plain, copies = onnx.load(str(tmp_path / "plain.onnx")), onnx.load(str(tmp_path / "copies.onnx"))
    assert len(concat_overrides(plain)) == card_section["concat_copies"]["tensors_quantized_as_their_concat"] > 0

    def concat_params(model) -> dict[str, tuple[list[tuple], tuple]]:
        consts = {i.name: onnx.numpy_helper.to_array(i).item() for i in model.graph.initializer
                  if onnx.numpy_helper.to_array(i).size == 1}
        producer = {o: n for n in model.graph.node for o in n.output}
        consumer = {i: n for n in model.graph.node for i in n.input}
        out = {}
        for node in model.graph.node:
            q = consumer.get(node.output[0])
            if (node.op_type == "Concat" and q is not None and q.op_type == "QuantizeLinear"
                    and all(producer[i].op_type == "DequantizeLinear" for i in node.input)):
                ins = [(consts[producer[i].input[1]], consts[producer[i].input[2]]) for i in node.input]
                out[node.name] = (ins, (consts[q.input[1]], consts[q.input[2]]))
        return out

    shared = concat_params(copies)
    skips = [name for name in shared if name.startswith("/up.")]
    assert len(skips) == 3
    for name in skips:
        inputs, output = shared[name]
        assert all(params == output for params in inputs), name
        assert not all(p == concat_params(plain)[name][1] for p in concat_params(plain)[name][0]), name
    assert "/Concat" not in shared  # the tail is left in float (below)
    assert conv_census(tmp_path / "copies.onnx")[:2] == (18, [])
    before, after = _run(tmp_path / "plain.onnx", frame_tensor), _run(tmp_path / "copies.onnx", frame_tensor)
    agree = (before[0].argmax(axis=1) == after[0].argmax(axis=1)).mean()
    assert agree > 0.99, agree


def test_the_image_convolution_and_the_nodes_after_the_last_convolutions_stay_in_float(tmp_path):
    """export.quantize: the convolution of the input image (3 channels, too few for the int8
    kernels) and, after the last convolutions, the Concat of logits and centres, the bilinear Resize
    and the Slices to the outputs are not quantized (each would cost a dequantize/quantize pass over
    full-resolution tensors); every other convolution is, and the census tells the two kinds of
    float convolution apart."""
    from export.quantize import input_convolutions, output_tail
    from export.validate import conv_census

    assert sorted(output_tail(onnx.load(str(FP32)))) == ["/Concat", "/Resize", "/Slice_1", "/Slice_2"]
    assert input_convolutions(onnx.load(str(FP32))) == ["/stem/stem.0/Conv"]
    reader = PreprocessedFrames(_frames(2), load_card(FP32).preprocess)
    section = quantize_int8(FP32, tmp_path / "int8.onnx", reader)
    assert sorted(section["left_in_float"]["output_tail"]) == ["/Concat", "/Resize", "/Slice_1", "/Slice_2"]
    assert section["left_in_float"]["input_convolutions"] == ["/stem/stem.0/Conv"]
    model = onnx.load(str(tmp_path / "int8.onnx"))
    producer = {out: n for n in model.graph.node for out in n.output}
    resize = next(n for n in model.graph.node if n.op_type == "Resize")
    assert producer[resize.input[0]].op_type == "Concat"
    assert all(producer[o.name].op_type == "Slice" for o in model.graph.output)
    concat = producer[resize.input[0]]
    assert {producer[i].op_type for i in concat.input} == {"Conv"}  # the heads' results, not rounded
    assert sorted(section["left_in_float"]["head_results"]) == ["/centre/Conv", "/head/Conv"]
    census = conv_census(tmp_path / "int8.onnx")
    assert census.quantized == 18 and census.floating == [] and len(census.on_input) == 1
    plain = quantize_int8(FP32, tmp_path / "plain.onnx", reader, choices=GraphChoices(float_nodes=False))
    assert plain["left_in_float"] is None
    assert conv_census(tmp_path / "plain.onnx") == (19, [], [])


def test_the_heads_results_stay_in_float_and_come_closer_to_fp32(tmp_path, frame_tensor):
    """export.quantize.float_results: without the QuantizeLinear/DequantizeLinear pair after the
    1x1 heads, the logits and centres are no longer rounded to 256 levels: on a real frame the int8
    model's logits come closer to fp32's than with the pair, and the heads still read int8 weights
    (the census counts them quantized, none float)."""
    from export.validate import conv_census

    reader = PreprocessedFrames(_frames(2), load_card(FP32).preprocess)
    freed = quantize_int8(FP32, tmp_path / "heads.onnx", reader)
    rounded = quantize_int8(FP32, tmp_path / "rounded.onnx", reader, choices=GraphChoices(float_heads=False))
    assert "head_results" not in rounded["left_in_float"]
    assert sorted(freed["left_in_float"]["head_results"]) == ["/centre/Conv", "/head/Conv"]
    reference = _run(FP32, frame_tensor)
    far = [float(np.abs(a - b).mean()) for a, b in zip(_run(tmp_path / "rounded.onnx", frame_tensor), reference)]
    near = [float(np.abs(a - b).mean()) for a, b in zip(_run(tmp_path / "heads.onnx", frame_tensor), reference)]
    assert all(n < f for n, f in zip(near, far)), (near, far)
    census = conv_census(tmp_path / "heads.onnx")
    assert census.floating == [] and census.quantized == conv_census(tmp_path / "rounded.onnx").quantized
