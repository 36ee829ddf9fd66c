"""Export validation: PyTorch, ONNX fp32 and ONNX int8 on the same preprocessed frames.

Checks (one error lists every failure, with its number and its limit):
- the outputs match by name, then by shape (export.compare), before any value is compared;
- fp32 ONNX reproduces PyTorch: max |Δ| of every output <= `max_abs_diff`;
- int8 per-class Dice (vs the truth) within `max_int8_dice_change` of fp32's;
- the graph ONNX Runtime actually runs for the int8 model has no float convolution: every Conv is
  a QLinearConv/ConvInteger or is fed by DequantizeLinear on both its input and its weight.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import onnx
import torch

from export.compare import compare_outputs
from runtime.contracts.classes import CLASS_NAMES
from runtime.contracts.errors import ModelError
from runtime.inference.session import SessionOptions, create_session
from runtime.inference.preprocess import IGNORE_INDEX, PreprocessParams
from training.datasets import Sample, prepare_sample
from training.metrics import ConfusionMeter

FLOAT_CONV_OPS = frozenset({"Conv", "FusedConv", "NhwcFusedConv", "ConvTranspose"})
QUANT_CONV_OPS = frozenset({"QLinearConv", "ConvInteger", "NhwcQLinearConv"})


class ExportValidationError(ModelError):
    """An exported model failed validation; `.report` holds every measurement."""

    def __init__(self, report: "ValidationReport") -> None:
        self.report = report
        super().__init__("export validation failed:\n  - " + "\n  - ".join(report.problems))


@dataclass(frozen=True)
class Tolerances:
    max_abs_diff: float = 1e-3
    max_int8_dice_change: float = 0.02


@dataclass
class ValidationReport:
    """All measurements of one validation run (JSON-ready via `to_dict`)."""

    frames: int
    fp32_vs_pytorch_max_abs_diff: dict[str, float]
    int8_vs_fp32_max_abs_diff: dict[str, float]
    dice_vs_truth: dict[str, dict[str, dict[str, float | None]]]
    agreement: dict[str, dict[str, dict[str, float | None]]]
    quantized_convs: int
    float_convs: list[str]
    input_float_convs: list[str] = field(default_factory=list)
    """Convolutions of the input image, left in float on purpose (export.quantize.input_convolutions)."""
    problems: list[str] = field(default_factory=list)

    def int8_dice_change(self) -> dict[str, float | None]:
        """Per-class Dice (vs truth) of int8 minus fp32."""
        out: dict[str, float | None] = {}
        for name in CLASS_NAMES:
            a, b = self.dice_vs_truth["int8"][name]["dice"], self.dice_vs_truth["fp32"][name]["dice"]
            out[name] = None if a is None or b is None else round(a - b, 6)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "fp32_vs_pytorch_max_abs_diff": self.fp32_vs_pytorch_max_abs_diff,
            "int8_vs_fp32_max_abs_diff": self.int8_vs_fp32_max_abs_diff,
            "dice_vs_truth": self.dice_vs_truth,
            "agreement": self.agreement,
            "int8_dice_change": self.int8_dice_change(),
            "quantized_convs": self.quantized_convs,
            "float_convs": self.float_convs,
            "input_float_convs": self.input_float_convs,
        }


class ConvCensus(NamedTuple):
    """The convolutions of the graph ORT runs on CPU, by how they run."""

    quantized: int
    floating: list[str]
    """Float convolutions inside the graph: a quantization that did not take."""
    on_input: list[str]
    """Float convolutions reading the graph's input image, which export.quantize leaves in float."""


def conv_census(int8_path: str | Path) -> ConvCensus:
    """(quantized convolutions, names of float convolutions, names of float convolutions of the
    input image) in the graph ORT runs on CPU."""
    with tempfile.TemporaryDirectory(prefix="smearscope-opt-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        create_session(int8_path, SessionOptions(providers=("cpu",), warmup=False, verify_hash=False,
                                                 optimized_model_path=str(optimized)))
        graph = onnx.load(str(optimized)).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    inputs = {i.name for i in graph.input}
    quantized, floating, on_input = 0, [], []
    for node in graph.node:
        if node.op_type in QUANT_CONV_OPS:
            quantized += 1
        elif node.op_type in FLOAT_CONV_OPS:
            fed = [producers.get(name) for name in node.input[:2]]
            if fed == ["DequantizeLinear", "DequantizeLinear"]:
                quantized += 1
            else:
                (on_input if node.input[0] in inputs else floating).append(f"{node.op_type} {node.name or node.output[0]}")
    return ConvCensus(quantized, floating, on_input)


def _outputs(model: torch.nn.Module, x: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """PyTorch's outputs under the graph's output names (in export order); any beyond them are
    named by position, so a count mismatch shows as missing or unexpected outputs."""
    with torch.inference_mode():
        out = model(torch.from_numpy(x))
    out = out if isinstance(out, tuple) else (out,)
    return {(names[i] if i < len(names) else f"output #{i}"): t.numpy() for i, t in enumerate(out)}


def _run(session: Any, input_name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {input_name: x})))


def validate_export(
    model: torch.nn.Module,
    fp32_path: str | Path,
    int8_path: str | Path,
    samples: Sequence[Sample],
    params: PreprocessParams,
    tolerances: Tolerances = Tolerances(),
    *,
    raise_on_failure: bool = True,
) -> ValidationReport:
    """Run the three models on the same preprocessed frames and check them (see module doc)."""
    if not samples:
        raise ModelError("validation needs at least one frame")
    model = model.eval()
    options = SessionOptions(providers=("cpu",), warmup=False, verify_hash=False)
    fp32, int8 = create_session(fp32_path, options), create_session(int8_path, options)
    names = [o.name for o in fp32.get_outputs()]
    input_name = fp32.get_inputs()[0].name
    diff_fp32 = {n: 0.0 for n in names}
    diff_int8 = {n: 0.0 for n in names}
    mismatches: list[str] = []  # names, shapes, non-finite values: each listed once, whatever the frame
    truth_meters = {k: ConfusionMeter() for k in ("pytorch", "fp32", "int8")}
    agree_meters = {k: ConfusionMeter() for k in ("fp32_vs_pytorch", "int8_vs_fp32")}
    for sample in samples:
        prepared, truth = prepare_sample(sample, params)
        x = prepared.tensor
        ref = _outputs(model, x, names)
        out_fp32, out_int8 = _run(fp32, input_name, x), _run(int8, input_name, x)
        for comparison, worst in ((compare_outputs(ref, out_fp32, "fp32 ONNX vs PyTorch"), diff_fp32),
                                  (compare_outputs(out_fp32, out_int8, "int8 ONNX vs fp32"), diff_int8)):
            mismatches += [p for p in comparison.problems if p not in mismatches]
            for n, diff in comparison.max_abs_diff.items():
                worst[n] = max(worst[n], diff)
        if mismatches:
            break  # the masks below need every model's first output, in the same shape
        preds = {"pytorch": ref[names[0]][0].argmax(0), "fp32": out_fp32[names[0]][0].argmax(0),
                 "int8": out_int8[names[0]][0].argmax(0)}
        for key, pred in preds.items():
            truth_meters[key].update(pred, truth)
        padded = truth == IGNORE_INDEX
        agree_meters["fp32_vs_pytorch"].update(preds["fp32"], np.where(padded, IGNORE_INDEX, preds["pytorch"]))
        agree_meters["int8_vs_fp32"].update(preds["int8"], np.where(padded, IGNORE_INDEX, preds["fp32"]))
    census = conv_census(int8_path)
    report = ValidationReport(
        frames=len(samples),
        fp32_vs_pytorch_max_abs_diff={n: round(v, 8) for n, v in diff_fp32.items()},
        int8_vs_fp32_max_abs_diff={n: round(v, 6) for n, v in diff_int8.items()},
        dice_vs_truth={k: m.scores() for k, m in truth_meters.items()},
        agreement={k: m.scores() for k, m in agree_meters.items()},
        quantized_convs=census.quantized,
        float_convs=census.floating,
        input_float_convs=census.on_input,
    )
    report.problems = mismatches + _problems(report, tolerances)
    if report.problems and raise_on_failure:
        raise ExportValidationError(report)
    return report


def _problems(report: ValidationReport, tol: Tolerances) -> list[str]:
    problems = []
    for name, diff in report.fp32_vs_pytorch_max_abs_diff.items():
        if not diff <= tol.max_abs_diff:
            problems.append(f"fp32 ONNX vs PyTorch: max |Δ {name}| = {diff:.3g} > {tol.max_abs_diff:g}")
    for name, change in report.int8_dice_change().items():
        if change is not None and abs(change) > tol.max_int8_dice_change:
            fp32 = report.dice_vs_truth["fp32"][name]["dice"]
            int8 = report.dice_vs_truth["int8"][name]["dice"]
            problems.append(f"int8 Dice for {name} {int8:.4f} vs fp32 {fp32:.4f} "
                            f"(Δ {change:+.4f}, limit ±{tol.max_int8_dice_change:g})")
    if report.float_convs:
        shown = ", ".join(report.float_convs[:5]) + (" …" if len(report.float_convs) > 5 else "")
        problems.append(f"optimised int8 graph still runs {len(report.float_convs)} float convolution(s): {shown}")
    if report.quantized_convs == 0:
        problems.append("optimised int8 graph has no quantized convolution")
    return problems
