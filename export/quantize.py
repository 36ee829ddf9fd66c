"""Static int8 quantization (QDQ) calibrated on frames that went through the one preprocessing.

Steps: the layout rewrites of export.layout (the int8 graph only: they make ONNX Runtime's
channels-last int8 graph cheaper and change no output), onnxruntime's quant_pre_process (shape
inference + graph optimisation), then quantize_static in QDQ format with per-channel symmetric int8
weights and uint8 asymmetric activations (the fast path of ONNX Runtime's x86 and Arm kernels). The calibration reader calls runtime.inference.preprocess.preprocess,
exactly as the device does, so the activation ranges are measured on what the model will see.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from export.conv_path import CONV_PATHS, gemm_weights
from export.layout import channels_last_depth_to_space, shapes_of_quantized
from export.shared_concat import concat_overrides, consumer_map
from runtime.contracts.errors import ConfigError, DataError, ModelError
from runtime.contracts.imageio import read_image
from runtime.inference.preprocess import PreprocessParams, preprocess

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class Frame(Protocol):
    """A camera frame with what the preprocessing needs to decide its scale (training.datasets.Sample fits)."""

    image: np.ndarray
    key: str

    def scale_kwargs(self) -> dict[str, float | None]: ...


@dataclass(frozen=True)
class ImageFrame:
    """A frame read from an image file; the scale comes from a calibration or is estimated."""

    image: np.ndarray
    key: str
    um_per_px: float | None = None

    def scale_kwargs(self) -> dict[str, float | None]:
        return {"um_per_px": self.um_per_px, "rbc_diameter_px": None}


def evenly_spaced(count: int, limit: int) -> np.ndarray:
    """Up to `limit` distinct indices into `count` items, spread evenly from the first to the last."""
    return np.unique(np.linspace(0, count - 1, min(limit, count)).round().astype(int))


def frames_from_folder(folder: str | Path, limit: int, um_per_px: float | None = None) -> list[ImageFrame]:
    """Up to `limit` images from a folder (sorted by name, spread evenly over it)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: calibration folder does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) for calibration")
    picks = evenly_spaced(len(files), limit)
    return [ImageFrame(read_image(files[i]), key=str(files[i]), um_per_px=um_per_px) for i in picks]


def frames_from_source(source: Sequence[Frame], limit: int) -> list[Frame]:
    """Up to `limit` frames of a source, spread evenly over it."""
    if len(source) == 0:
        raise DataError("calibration source is empty")
    return [source[int(i)] for i in evenly_spaced(len(source), limit)]


class PreprocessedFrames(CalibrationDataReader):
    """Feeds ONNX Runtime's calibrator one preprocessed frame at a time (batch 1, native size)."""

    def __init__(self, frames: Iterable[Frame], params: PreprocessParams, input_name: str = "image") -> None:
        self.input_name = input_name
        self.tensors = [
            preprocess(f.image, params, source=f.key or "calibration frame", **f.scale_kwargs()).tensor for f in frames
        ]
        if not self.tensors:
            raise DataError("no calibration frames")
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.tensors):
            return None
        self._next += 1
        return {self.input_name: self.tensors[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0

    def cropped_to_common_size(self) -> "PreprocessedFrames":
        """The same frames centre-cropped to the smallest height and width among them (both stay
        multiples of the stride). ONNX Runtime's histogram calibrators (entropy, percentile) stack
        every frame's activations into one array, which frames of different sizes cannot form."""
        h = min(t.shape[2] for t in self.tensors)
        w = min(t.shape[3] for t in self.tensors)
        return PreprocessedFrames.from_tensors(
            [np.ascontiguousarray(t[:, :, (t.shape[2] - h) // 2:(t.shape[2] - h) // 2 + h,
                                  (t.shape[3] - w) // 2:(t.shape[3] - w) // 2 + w]) for t in self.tensors],
            self.input_name)

    @classmethod
    def from_tensors(cls, tensors: list[np.ndarray], input_name: str = "image") -> "PreprocessedFrames":
        """A reader of network inputs already made (1xCxHxW float32 each)."""
        if not tensors:
            raise DataError("no calibration frames")
        out = object.__new__(cls)
        out.input_name, out._next, out.tensors = input_name, 0, list(tensors)
        return out

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def sha256(self) -> str:
        """Hash of exactly what the calibrator saw (shapes and float32 bytes, in order)."""
        digest = hashlib.sha256()
        for tensor in self.tensors:
            digest.update(str(tensor.shape).encode())
            digest.update(np.ascontiguousarray(tensor, dtype=np.float32).tobytes())
        return digest.hexdigest()


def calibrator_frames(reader: PreprocessedFrames, method: str) -> PreprocessedFrames:
    """What `method`'s calibrator is given: the frames as they are for minmax, centre-cropped to a
    common size for the histogram methods (PreprocessedFrames.cropped_to_common_size). The card's
    calibration-set hash is this reader's."""
    return reader if CALIBRATION_METHODS[method] == CalibrationMethod.MinMax else reader.cropped_to_common_size()


TAIL_OPS = frozenset({"Concat", "Resize", "Slice", "Split", "Transpose", "Reshape"})
"""Operators that only gather, move or resample values: after the last convolution they stay in
float (output_tail)."""


def output_tail(model: Any) -> list[str]:
    """Names of the nodes between the last convolutions and the graph's outputs that only move or
    resample values (the lite network's Concat of logits and centres, the bilinear Resize, the
    Slices). Quantized, each would be DequantizeLinear -> op -> QuantizeLinear, and the outputs
    dequantized again: passes over full-resolution tensors that add rounding and no speed. Left in
    float, the convolutions' outputs are dequantized once."""
    producer = {out: node for node in model.graph.node for out in node.output}
    tail: list[str] = []
    todo = [out.name for out in model.graph.output]
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.op_type not in TAIL_OPS or node.name in tail:
            continue
        tail.append(node.name)
        todo.extend(node.input[:1] if node.op_type != "Concat" else node.input)
    return tail


def input_convolutions(model: Any) -> list[str]:
    """Names of the convolutions that read the graph's input image itself. With 3 input channels a
    3x3 convolution's dot products are 27 long, too short for the int8 kernels: on the lite network
    at the camera field (2 threads) its int8 form took 0.65 ms for under 1 % of the MACs, and the
    pass ran about 0.27 ms faster with it in float (its output is quantized for the next one),
    which also keeps the image at full precision."""
    inputs = {i.name for i in model.graph.input}
    return [node.name for node in model.graph.node if node.op_type == "Conv" and node.input[0] in inputs]


def float_results(model: Any, tail: Sequence[str]) -> list[str]:
    """Remove the QuantizeLinear -> DequantizeLinear pair after each convolution whose result only
    feeds the float output tail (the logits and centres heads); returns those convolutions' names.

    Why: quantize_static rounds every convolution's result to uint8 on one per-tensor scale. For the
    heads that is the logits themselves: the platelet class, a thin margin between large logits,
    loses most to that rounding (stride-4 network, 200 held-out train frames: platelet F1
    int8 0.883 against fp32 0.898 with the pair, 0.891 without it). Without the pair the head runs
    as a float convolution of int8 weights on the dequantized uint8 activations, the products
    exactly as before. The cost is the dequantized input of the 1x1 heads: about 1 ms per pass on that
    network at 304x400, two cores (16.3 -> 17.3 ms).
    """
    consumers = consumer_map(model.graph)
    ends = {o.name for o in model.graph.output}
    tail_set = set(tail)
    freed: list[str] = []
    for node in list(model.graph.node):
        if node.op_type != "Conv":
            continue
        quant = consumers.get(node.output[0], [])
        if len(quant) != 1 or quant[0].op_type != "QuantizeLinear" or node.output[0] in ends:
            continue
        dequant = consumers.get(quant[0].output[0], [])
        if len(dequant) != 1 or dequant[0].op_type != "DequantizeLinear":
            continue
        readers = consumers.get(dequant[0].output[0], [])
        if not readers or not all(r.name in tail_set for r in readers) or dequant[0].output[0] in ends:
            continue
        for reader in readers:
            for k, name in enumerate(reader.input):
                if name == dequant[0].output[0]:
                    reader.input[k] = node.output[0]
        model.graph.node.remove(quant[0])
        model.graph.node.remove(dequant[0])
        freed.append(node.name)
    return freed


def _quantize(source: Path, target: Path, reader: PreprocessedFrames, method: str,
              overrides: dict[str, list[dict[str, Any]]] | None = None, exclude: Sequence[str] = ()) -> None:
    """One quantize_static run in the project's settings (QDQ, per-channel symmetric int8 weights,
    asymmetric uint8 activations), with optional TensorQuantOverrides and nodes left in float."""
    reader.rewind()
    extra: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    quantize_static(
        str(source),
        str(target),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CALIBRATION_METHODS[method],
        nodes_to_exclude=list(exclude),
        extra_options=extra,
    )


@dataclass(frozen=True)
class GraphChoices:
    """What quantize_int8 does to the graph besides quantizing it; the defaults are the shipped form.

    `layout_rewrites=False` quantizes the graph exactly as exported (tests compare the two);
    `concat_copies=False` leaves every tensor its own calibrated range (export.shared_concat);
    `float_nodes=False` quantizes the input image's convolutions and the nodes after the last
    convolutions too (input_convolutions, output_tail);
    `float_heads=False` (only with float_nodes) keeps the heads' results rounded to uint8
    (float_results);
    `conv_path="gemm"` moves the convolutions to ONNX Runtime's im2col + GEMM kernels, the same
    products (export.conv_path).
    """

    layout_rewrites: bool = True
    concat_copies: bool = True
    float_nodes: bool = True
    float_heads: bool = True
    conv_path: str = "direct"


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, reader: PreprocessedFrames,
                  method: str = "minmax", choices: GraphChoices = GraphChoices()) -> dict[str, Any]:
    """Write a QDQ int8 model; returns the card's `quantization` section."""
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    if choices.conv_path not in CONV_PATHS:
        raise ConfigError(f"convolution path {choices.conv_path!r}; valid: {', '.join(CONV_PATHS)}")
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    rewrites: dict[str, int] = {}
    overrides: dict[str, list[dict[str, Any]]] = {}
    left_in_float: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="smearscope-quant-") as tmp:
        source, prepared = fp32_path, Path(tmp) / "preprocessed.onnx"
        if choices.layout_rewrites:
            laid_out, rewrites["depth_to_space_channels_last"] = channels_last_depth_to_space(onnx.load(str(fp32_path)))
            source = Path(tmp) / "laid_out.onnx"
            onnx.save(laid_out, str(source))
        # Height and width are symbolic; inputs are multiples of the stride, so merging the symbolic
        # sizes that down- and up-sampling produce (auto_merge) is sound.
        try:
            quant_pre_process(str(source), str(prepared), auto_merge=True)
        except Exception as exc:  # ORT's pre-processing raises untyped errors on unsupported graphs
            raise ModelError(f"{fp32_path}: quantization pre-processing failed ({exc})") from exc
        reader = calibrator_frames(reader, method)
        if choices.float_nodes:
            graph = onnx.load(str(prepared))
            left_in_float = {"input_convolutions": input_convolutions(graph), "output_tail": output_tail(graph)}
        excluded = [name for names in left_in_float.values() for name in names]
        _quantize(prepared, int8_path, reader, method, exclude=excluded)
        if choices.concat_copies:
            overrides = concat_overrides(onnx.load(str(int8_path)))
            if overrides:  # again, with the Concat inputs' ranges set (the calibration is deterministic)
                _quantize(prepared, int8_path, reader, method, overrides, excluded)
    moved = 0
    heads = choices.float_nodes and choices.float_heads
    if choices.layout_rewrites or choices.conv_path == "gemm" or heads:  # one load and one save for every rewrite
        quantized = onnx.load(str(int8_path))
        if heads:
            left_in_float["head_results"] = float_results(quantized, left_in_float["output_tail"])
        if choices.layout_rewrites:
            quantized, rewrites["shapes_read_quantized"] = shapes_of_quantized(quantized)
        if choices.conv_path == "gemm":
            moved = gemm_weights(quantized)
        onnx.save(quantized, str(int8_path))
    return {
        "format": "QDQ",
        "weights": "int8, per-channel, symmetric",
        "activations": "uint8, per-tensor, asymmetric",
        "calibration_method": method,
        "calibration_frames": len(reader),
        "calibration_set_sha256": reader.sha256,
        "pre_process": "onnxruntime.quantization.quant_pre_process",
        "layout_rewrites": {"module": "export.layout", **rewrites} if choices.layout_rewrites else None,
        "concat_copies": {"module": "export.shared_concat", "tensors_quantized_as_their_concat": len(overrides)}
        if choices.concat_copies else None,
        "left_in_float": left_in_float or None,
        "conv_path": {"module": "export.conv_path", "path": choices.conv_path, "weight_tensors_moved": moved},
        "onnxruntime": ort.__version__,
    }
