"""Checkpoint -> NAME.fp32.onnx + NAME.int8.onnx, validated, each with its model card.

Cards are written only after every validation check passes: a model without a card is refused
by the runtime, so a failed export can never be shipped by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from export.card import CardContent, write_card
from export.onnx_export import DEFAULT_OPSET, export_segmentation
from export.quantize import Frame, GraphChoices, PreprocessedFrames, quantize_int8
from export.scale_fit import fit_inference, fitted_plan
from export.validate import Tolerances, ValidationReport, validate_export
from runtime.contracts.errors import ConfigError
from runtime.contracts.modelcard import ModelCard, sha256_file
from training.checkpoint import load_checkpoint
from training.datasets import Sample


@dataclass
class ExportResult:
    fp32: Path
    int8: Path
    fp32_card: ModelCard
    int8_card: ModelCard
    report: ValidationReport


@dataclass
class ExportData:
    """The frames an export reads, each set with its description for the cards.

    `calibration`: unlabelled frames like the device's, for int8 calibration; `validation`:
    labelled frames not used for calibration; `scale_fit`: labelled training frames on which each
    model's inference plan is fitted (export.scale_fit), None to skip the fit.
    """

    calibration: Sequence[Frame]
    validation: Sequence[Sample]
    calibration_info: dict[str, Any]
    validation_info: dict[str, Any]
    scale_fit: Iterable[Sample] | None = None
    scale_fit_info: dict[str, Any] | None = None


@dataclass(frozen=True)
class ExportSettings:
    """How to export: the card's version, int8 calibration, validation limits, ONNX opset,
    whether the device averages each frame's final pass with its flipped runs, and the int8
    convolutions' kernel path."""

    version: str = "1"
    calibration_method: str = "minmax"
    tolerances: Tolerances = Tolerances()
    opset: int = DEFAULT_OPSET
    flip_average: bool = False
    conv_path: str = "direct"
    """ONNX Runtime's int8 convolution kernels the int8 model asks for (export.conv_path)."""


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, name: str, data: ExportData,
                      settings: ExportSettings = ExportSettings(), log: Callable[[str], None] = print) -> ExportResult:
    """Export, simplify, quantize and validate a segmentation checkpoint; fit each model's
    inference plan on `data.scale_fit`; write both models and cards."""
    calibration, validation = data.calibration, data.validation
    version, calibration_method, tolerances = settings.version, settings.calibration_method, settings.tolerances
    opset, flip_average = settings.opset, settings.flip_average
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ConfigError(f"model name {name!r}: use a plain file name such as 'seg-unet'")
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out_dir}: cannot create output folder ({exc.strerror or exc})") from exc
    fp32_path, int8_path = out_dir / f"{name}.fp32.onnx", out_dir / f"{name}.int8.onnx"
    for path in (fp32_path, int8_path):
        _check_writable(path)

    log(f"[1/5] exporting {ckpt.model_name} {ckpt.model_kwargs} to ONNX (opset {opset}) and simplifying")
    export_segmentation(model, ckpt.preprocess, fp32_path, opset=opset)
    log(f"[2/5] preprocessing {len(calibration)} calibration frames")
    reader = PreprocessedFrames(calibration, ckpt.preprocess)
    log(f"[3/5] quantizing to int8 (QDQ, {calibration_method} calibration)")
    quantization = quantize_int8(fp32_path, int8_path, reader, calibration_method,
                                 GraphChoices(conv_path=settings.conv_path))
    quantization["calibration_data"] = data.calibration_info
    log(f"[4/5] validating PyTorch / fp32 / int8 on {len(validation)} frames")
    report = validate_export(model, fp32_path, int8_path, validation, ckpt.preprocess, tolerances)
    fits = _fit_plans(fp32_path, int8_path, ckpt.preprocess, data.scale_fit, log, flip_average)
    plans = {kind: fitted_plan(fits.get(kind), flip_average=flip_average).to_dict() for kind in ("fp32", "int8")}
    fit_info = {"data": data.scale_fit_info or {}} if fits else {"data": None, "note": "no labelled frames: ratio 1.0"}

    common = {
        "version": version,
        "task": "segmentation",
        "preprocess": ckpt.preprocess,
        "training_data": ckpt.training_data,
    }
    extra = {
        "architecture": {"name": ckpt.model_name, **ckpt.model_kwargs},
        "checkpoint": {"file": Path(checkpoint).name, "sha256": sha256_file(checkpoint), "epoch": ckpt.epoch},
        "training": {"config": ckpt.raw.get("train_config") or {}, "steps": ckpt.raw.get("step"),
                     "minutes": round(float(ckpt.raw.get("elapsed_s", 0.0)) / 60.0, 1),
                     "init": ckpt.raw.get("init"), "teacher": ckpt.raw.get("teacher")},
        "validation_checks": {"tolerances": vars(tolerances), "passed": True},
    }
    validation_common = {"data": data.validation_info, "frames": report.frames}
    fp32_card = write_card(fp32_path, CardContent(
        name=name, quantization=None,
        metrics={"validation": {**validation_common, "per_class": report.dice_vs_truth["fp32"],
                                "max_abs_diff_vs_pytorch": report.fp32_vs_pytorch_max_abs_diff},
                 "training_validation": ckpt.metrics.get("val", {})},
        extra={**extra, "inference": plans["fp32"], "inference_fit": {**fit_info, **fits.get("fp32", {})}}, **common,
    ))
    int8_card = write_card(int8_path, CardContent(
        name=name, quantization=quantization,
        metrics={"validation": {**validation_common, "per_class": report.dice_vs_truth["int8"]},
                 "training_validation": ckpt.metrics.get("val", {})},
        extra={**extra, "inference": plans["int8"], "inference_fit": {**fit_info, **fits.get("int8", {})},
               "fp32_to_int8": {
            "dice_change": report.int8_dice_change(),
            "max_abs_diff": report.int8_vs_fp32_max_abs_diff,
            "agreement_dice": report.agreement["int8_vs_fp32"],
            "quantized_convs": report.quantized_convs,
            "float_convs": len(report.float_convs),
            "input_float_convs": len(report.input_float_convs),
            "fp32_sha256": fp32_card.sha256,
        }},
        **common,
    ))
    return ExportResult(fp32_path, int8_path, fp32_card, int8_card, report)


def _fit_plans(fp32_path: Path, int8_path: Path, params, frames: Iterable[Sample] | None,
               log: Callable[[str], None], flip_average: bool) -> dict[str, dict[str, Any]]:
    if frames is None:
        log("[5/5] no labelled frames for the scale fit: cards keep measured_diameter_ratio 1.0")
        return {}
    log("[5/5] fitting each model's measured red-cell size and platelet growth on labelled frames at their labelled scale")
    from runtime.inference.session import SessionOptions, create_session

    runs = {}
    for kind, path in (("fp32", fp32_path), ("int8", int8_path)):
        session = create_session(path, SessionOptions(providers=("cpu",), warmup=False))
        names, input_name = [o.name for o in session.get_outputs()], session.get_inputs()[0].name
        runs[kind] = lambda tensor, s=session, n=names, i=input_name: dict(zip(n, s.run(n, {i: tensor})))
    fits = fit_inference(runs, params, frames, flip_average=flip_average)
    for kind, fit in fits.items():
        log(f"  {kind}: red cells on its masks measure {fit['measured_diameter_ratio']:.3f}x the labelled size "
            f"({fit['frames']} frames, mean deviation {100 * fit['mean_abs_deviation']:.1f} %); platelets grow "
            f"{fit['platelet_grow_px']:g} grid px (platelet Dice by growth: {fit['platelet_dice_by_grow_px']})")
    return fits


def _check_writable(path: Path) -> None:
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write ({exc.strerror or exc})") from exc
