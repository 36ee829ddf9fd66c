"""`smearscope export`: checkpoint -> NAME.fp32.onnx and NAME.int8.onnx, validated, with model cards."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A checkpoint from `smearscope train segmentation` (best.pt).")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where NAME.fp32.onnx, NAME.int8.onnx and their .json cards are written.")
@click.option("--name", required=True, help="Model name (file stem and card name), e.g. seg-unet.")
@click.option("--version", "model_version", default="1", show_default=True, help="Version recorded in the cards.")
@click.option("--calibration-data", default=None, metavar="synthetic|PATH",
              help="Frames for int8 calibration: 'synthetic', a TXL-PBC folder (its train split), or a folder "
                   "of images. Default: the model's own training data (synthetic, or its TXL-PBC folder).")
@click.option("--calibration-frames", default=32, show_default=True, type=click.IntRange(1))
@click.option("--calibration-method", default="minmax", show_default=True,
              type=click.Choice(["minmax", "entropy", "percentile"]))
@click.option("--um-per-px", type=click.FloatRange(min=0, min_open=True),
              help="Calibration of a plain image folder (else the red-cell size is estimated per frame).")
@click.option("--validation-data", default=None, metavar="synthetic|PATH",
              help="Labelled frames for validation: 'synthetic' or a TXL-PBC folder (its val split). "
                   "Default: the same kind as the calibration data.")
@click.option("--validation-frames", default=16, show_default=True, type=click.IntRange(1))
@click.option("--max-dice-change", default=0.02, show_default=True, type=click.FloatRange(min=0),
              help="Largest allowed per-class Dice change from fp32 to int8.")
@click.option("--scale-fit-frames", default=200, show_default=True, type=click.IntRange(0),
              help="Labelled calibration-data frames (TXL-PBC train split, or synthetic) on which each model's "
                   "measured red-cell size is fitted for the scale search (card: inference); 0 skips the fit.")
@click.option("--flip-average/--no-flip-average", default=True, show_default=True,
              help="Record in the cards that the device averages each frame's final pass with its flipped runs "
                   "(two more network runs per frame).")
@click.option("--conv-path", type=click.Choice(["direct", "gemm"]), default="direct", show_default=True,
              help="int8 convolution kernels: 'direct' (symmetric weights, ONNX Runtime's direct kernels: faster "
                   "for the lite network) or 'gemm' (the same products through im2col + GEMM: faster for wide "
                   "convolutions on a CPU with AMX; python -m benchmarks.arch_candidates measures both).")
def export(checkpoint: Path, out_dir: Path, name: str, model_version: str, calibration_data: str | None,
           calibration_frames: int, calibration_method: str, um_per_px: float | None, validation_data: str | None,
           validation_frames: int, max_dice_change: float, scale_fit_frames: int, flip_average: bool,
           conv_path: str) -> None:
    """Export a trained segmentation model to ONNX, quantize it to int8 and validate both.

    \b
    Steps: torch -> ONNX (opset 17) -> onnxsim -> quant_pre_process -> static QDQ int8
    (calibrated on frames through the one preprocessing) -> PyTorch / fp32 / int8 comparison
    on labelled frames not used for calibration -> each model's red-cell size fit for the
    scale search. Cards are written only if every check passes.

    \b
    Example:
      smearscope export --checkpoint runs/syn/best.pt --out-dir models --name seg-unet
    """
    from runtime.contracts.errors import SmearscopeError

    try:
        from export.pipeline import ExportData, ExportSettings, export_checkpoint
        from export.quantize import evenly_spaced, frames_from_folder, frames_from_source
        from export.validate import Tolerances
        from runtime.contracts.errors import DataError
        from training.checkpoint import load_checkpoint
        from training.datasets import build_source

        ckpt = load_checkpoint(checkpoint)
        trained = ckpt.training_data.get("train") or {}
        if calibration_data is None:
            if trained.get("name") == "synthetic":
                calibration_data = "synthetic"
            elif trained.get("name") == "txl_pbc" and trained.get("path") and Path(trained["path"]).is_dir():
                calibration_data = trained["path"]  # its train split: frames of the training distribution
            else:
                raise DataError(f"{checkpoint}: trained on {trained.get('name') or 'unknown data'}; pass "
                                "--calibration-data (a folder of frames like the ones the device will see)")
        validation_data = validation_data or calibration_data

        fit_src = None
        if calibration_data == "synthetic":
            cal_src = build_source("synthetic", None, "calibration", count=calibration_frames)
            calibration, cal_info = frames_from_source(cal_src, calibration_frames), cal_src.describe()
            fit_src = build_source("synthetic", None, "calibration", count=max(1, scale_fit_frames))
        elif (Path(calibration_data) / "images" / "train").is_dir():
            cal_src = build_source("txl_pbc", calibration_data, "train")
            calibration, cal_info = frames_from_source(cal_src, calibration_frames), cal_src.describe()
            fit_src = cal_src
        else:
            calibration = frames_from_folder(calibration_data, calibration_frames, um_per_px)
            cal_info = {"name": "folder", "path": str(calibration_data), "frames": len(calibration), "um_per_px": um_per_px}

        if validation_data == "synthetic":
            val_src = build_source("synthetic", None, "val", count=validation_frames)
        elif (Path(validation_data) / "images" / "val").is_dir():
            val_src = build_source("txl_pbc", validation_data, "val")
        else:
            raise DataError(f"{validation_data}: validation needs labelled frames: pass --validation-data synthetic "
                            "or a TXL-PBC folder")
        validation = frames_from_source(val_src, validation_frames)
        scale_fit, fit_info = None, None
        if fit_src is not None and scale_fit_frames > 0:
            picks = evenly_spaced(len(fit_src), scale_fit_frames)
            scale_fit = (fit_src[int(i)] for i in picks)  # read one at a time
            fit_info = {**fit_src.describe(), "frames_used": int(picks.size)}

        data = ExportData(calibration=calibration, validation=validation, calibration_info=cal_info,
                          validation_info=val_src.describe(), scale_fit=scale_fit, scale_fit_info=fit_info)
        settings = ExportSettings(version=model_version, calibration_method=calibration_method,
                                  tolerances=Tolerances(max_int8_dice_change=max_dice_change), flip_average=flip_average,
                                  conv_path=conv_path)
        result = export_checkpoint(checkpoint, out_dir, name, data, settings, log=click.echo)
        report = result.report
        click.echo(f"fp32 vs PyTorch max |Δ|: {report.fp32_vs_pytorch_max_abs_diff}")
        dice = report.dice_vs_truth
        for cls in dice["fp32"]:
            f, q = dice["fp32"][cls]["dice"], dice["int8"][cls]["dice"]
            if f is not None and q is not None:
                click.echo(f"  {cls:<10} Dice fp32 {f:.4f}  int8 {q:.4f}  Δ {q - f:+.4f}")
        click.echo(f"int8 graph: {report.quantized_convs} quantized convolutions, {len(report.float_convs)} float"
                   + (f" ({len(report.input_float_convs)} more in float on the input image)" if report.input_float_convs else ""))
        click.echo(f"wrote {result.fp32} and {result.int8} (+ cards)")
    except SmearscopeError as exc:
        from smearscope.cli.entry import as_user_error

        raise as_user_error(exc) from None  # one line; exit 2 for config/model, 1 for data
