"""The model pipeline end to end: a tiny U-Net trained about a minute on synthetic smears, exported,
quantized and validated (issue 2 "Must show"), plus checks that the checks can fail."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from model_fixtures import tiny_model  # noqa: F401  (session fixture)
from runtime.contracts.classes import CLASS_NAMES
from runtime.contracts.modelcard import load_card, sha256_file
from runtime.inference.session import SessionOptions, load_model


def test_fp32_matches_pytorch_and_int8_matches_fp32(tiny_model):
    report = tiny_model.report
    assert report.frames >= 8
    assert report.fp32_vs_pytorch_max_abs_diff["logits"] <= 1e-3
    for name in CLASS_NAMES:
        fp32 = report.dice_vs_truth["fp32"][name]["dice"]
        int8 = report.dice_vs_truth["int8"][name]["dice"]
        assert fp32 is not None and int8 is not None, name
        assert abs(int8 - fp32) <= 0.02, (name, fp32, int8)
    # The model really learnt something (so the int8 comparison is not between two blank outputs).
    assert report.dice_vs_truth["fp32"]["rbc"]["dice"] > 0.85
    assert report.dice_vs_truth["fp32"]["wbc"]["dice"] > 0.7
    assert report.dice_vs_truth["fp32"]["platelet"]["dice"] > 0.3


def test_int8_graph_runs_no_float_conv(tiny_model):
    from export.validate import conv_census

    census = conv_census(tiny_model.int8)
    assert census.floating == []
    assert census.quantized == tiny_model.report.quantized_convs > 0
    assert len(census.on_input) == 1 and census.on_input == tiny_model.report.input_float_convs  # the image's own
    # The same census on the fp32 model finds every convolution in float: the check can fail.
    fp32 = conv_census(tiny_model.fp32)
    assert fp32.quantized == 0 and len(fp32.floating) == census.quantized and len(fp32.on_input) == 1


def test_exported_graphs_are_what_the_device_expects(tiny_model):
    for path in (tiny_model.fp32, tiny_model.int8):
        model = onnx.load(str(path))
        assert [i.name for i in model.graph.input] == ["image"]
        assert [o.name for o in model.graph.output] == ["logits"]
        dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"]
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        assert not any(n.op_type == "ConvTranspose" for n in model.graph.node)
    int8_ops = {n.op_type for n in onnx.load(str(tiny_model.int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= int8_ops


def test_cards_describe_the_files(tiny_model):
    for path in (tiny_model.fp32, tiny_model.int8):
        card = load_card(path)  # verifies the sha256
        assert card.sha256 == sha256_file(path)
        assert card.classes == list(CLASS_NAMES)
        assert card.input_name == "image" and card.output_names == ["logits"]
        assert card.preprocess is not None and card.opset >= 17
        assert card.training_data["train"]["name"] == "synthetic"
        assert card.metrics["validation"]["frames"] == tiny_model.report.frames
    int8 = load_card(tiny_model.int8)
    q = int8.quantization
    assert q["format"] == "QDQ" and q["calibration_method"] == "minmax"
    assert len(q["calibration_set_sha256"]) == 64
    assert q["calibration_data"]["split"] == "calibration"
    assert int8.metrics["validation"]["data"]["split"] == "test"
    deltas = int8.extra["fp32_to_int8"]
    assert deltas["float_convs"] == 0 and set(deltas["dice_change"]) == set(CLASS_NAMES)
    json.dumps(int8.to_dict())  # JSON-clean


def test_runtime_loads_int8_model_and_segments(tiny_model):
    from runtime.inference.preprocess import mask_to_frame, preprocess
    from runtime.capture.synthetic import generate_smear

    loaded = load_model(tiny_model.int8, SessionOptions(providers=("cpu",)))
    smear = generate_smear(424242, 192, 192, um_per_px=0.2, style=__import__("export.quick").quick.TINY_STYLE)
    prepared = preprocess(smear.image, loaded.card.preprocess, um_per_px=smear.um_per_px)
    logits = loaded.run({"image": prepared.tensor})["logits"]
    pred = mask_to_frame(logits[0].argmax(0).astype(np.uint8), prepared.geometry)
    rbc_truth, rbc_pred = smear.mask == 1, pred == 1
    dice = 2 * np.sum(rbc_truth & rbc_pred) / (rbc_truth.sum() + rbc_pred.sum())
    assert dice > 0.8


def test_validation_lists_every_failure_in_one_error(tiny_model, tmp_path):
    from export.validate import ExportValidationError, Tolerances, validate_export
    from export.quick import TINY_PARAMS, TINY_STYLE
    from training.checkpoint import load_checkpoint
    from training.datasets import SyntheticSource

    model = load_checkpoint(tiny_model.int8.parent / "train" / "best.pt").build()
    source = SyntheticSource(count=2, split="test", height=192, width=192, style=TINY_STYLE)
    # Passing the fp32 file as "int8" leaves float convolutions; impossible tolerances fail the rest.
    with pytest.raises(ExportValidationError) as info:
        validate_export(model, tiny_model.fp32, tiny_model.fp32, [source[0], source[1]], TINY_PARAMS,
                        Tolerances(max_abs_diff=0.0, max_int8_dice_change=-1.0))
    message = str(info.value)
    assert "fp32 ONNX vs PyTorch" in message
    assert "float convolution" in message
    assert all(f"int8 Dice for {name}" in message for name in CLASS_NAMES)
    assert info.value.report.float_convs


def test_validation_compares_names_and_shapes_before_values(tiny_model):
    """A PyTorch model whose output would broadcast against the graph's is a shape mismatch, listed
    with the other failures, not a small difference."""
    import torch

    from export.quick import TINY_PARAMS, TINY_STYLE
    from export.validate import ExportValidationError, validate_export
    from training.checkpoint import load_checkpoint
    from training.datasets import SyntheticSource

    class Pooled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.inner(x)
            return logits.mean(dim=(2, 3), keepdim=True), logits  # one output too many, the first pooled

    model = Pooled(load_checkpoint(tiny_model.int8.parent / "train" / "best.pt").build())
    source = SyntheticSource(count=1, split="test", height=192, width=192, style=TINY_STYLE)
    with pytest.raises(ExportValidationError) as info:
        validate_export(model, tiny_model.fp32, tiny_model.fp32, [source[0]], TINY_PARAMS)
    problems = info.value.report.problems
    assert problems[0] == "fp32 ONNX vs PyTorch: missing output(s) output #1"  # PyTorch gave two
    assert problems[1].startswith("fp32 ONNX vs PyTorch: output logits has shape")
    assert any("float convolution" in p for p in problems)


def test_report_figures(tiny_model, capsys):
    """Print the measured figures (pytest -s shows them; docs/model-pipeline.md quotes a run)."""
    report = tiny_model.report.to_dict()
    with capsys.disabled():
        print("\nfp32 vs PyTorch max|Δ|:", report["fp32_vs_pytorch_max_abs_diff"],
              "| int8 vs fp32 max|Δ|:", report["int8_vs_fp32_max_abs_diff"])
        for name in CLASS_NAMES:
            print(f"  {name:<10} Dice fp32 {report['dice_vs_truth']['fp32'][name]['dice']:.4f} "
                  f"int8 {report['dice_vs_truth']['int8'][name]['dice']:.4f} "
                  f"Δ {report['int8_dice_change'][name]:+.4f}")
    assert report["quantized_convs"] > 0


def test_centre_head_exports_logits_and_centres(tmp_path):
    """A U-Net with the centre head exports both outputs, by name, through quantization and validation."""
    from export.quick import TinyRecipe, build_tiny_model
    from export.validate import Tolerances

    # 16 steps only: this checks the two-output plumbing, not accuracy (the int8 Dice gate is
    # exercised on the trained model above), hence the loose Dice tolerance.
    result = build_tiny_model(tmp_path, TinyRecipe(steps=16, name="tiny-centres", centre_head=True,
                                                   calibration_frames=2, validation_frames=2,
                                                   tolerances=Tolerances(max_int8_dice_change=1.0)))
    assert result.report.fp32_vs_pytorch_max_abs_diff["centres"] <= 1e-3
    assert result.report.float_convs == []
    for path in (result.fp32, result.int8):
        card = load_card(path)
        assert card.output_names == ["logits", "centres"]
        outputs = load_model(path, SessionOptions(providers=("cpu",))).run(
            {"image": np.zeros((1, 3, 64, 96), np.float32)})
        assert outputs["logits"].shape == (1, 4, 64, 96) and outputs["centres"].shape == (1, 1, 64, 96)
