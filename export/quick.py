"""A small real model in about a minute: train a tiny U-Net on synthetic smears, export, quantize.

For tests and demos that need a genuine int8 model with a card (not a shipped model):

    from export.quick import build_tiny_model
    result = build_tiny_model(tmp_path)          # TinyRecipe() by default; ExportResult: .int8, .fp32, cards, report
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from export.pipeline import ExportData, ExportResult, ExportSettings, export_checkpoint
from export.validate import Tolerances
from runtime.inference.preprocess import PreprocessParams
from runtime.capture.synthetic import SmearStyle
from training.datasets import Augment, DatasetCrops, SegmentationDataset, SyntheticSource
from training.loop import TrainConfig, TrainingRun, train_segmentation

TINY_PARAMS = PreprocessParams(target_rbc_diameter_px=24.0, stride=16)
"""Small red cells keep frames (and the minute of training) small."""
TINY_MODEL = {"name": "unet", "kwargs": {"base_width": 8, "depth": 3, "centre_head": False}}
TINY_STYLE = SmearStyle(platelets_per_rbc=0.15)
"""More platelets than blood has, so the smallest class is learnt within a minute."""


@dataclass(frozen=True)
class TinyRecipe:
    """How much to train and check: `steps` steps of 8 crops (200: about a minute on one idle core).
    A fixed step count, not a time budget, so the model (and every figure measured on it) is the
    same on a busy machine as on an idle one."""

    steps: int = 200
    name: str = "tiny-unet"
    centre_head: bool = False
    seed: int = 0
    calibration_frames: int = 8
    validation_frames: int = 8
    tolerances: Tolerances = Tolerances()
    threads: int = 1


def build_tiny_model(out_dir: str | Path, recipe: TinyRecipe = TinyRecipe(),
                     log: Callable[[str], None] = lambda _msg: None) -> ExportResult:
    """Train by `recipe`, validating every 8 steps, then export NAME.fp32.onnx / NAME.int8.onnx
    (+ cards) into out_dir."""
    steps, name, centre_head, seed = recipe.steps, recipe.name, recipe.centre_head, recipe.seed
    threads, tolerances = recipe.threads, recipe.tolerances
    calibration_frames, validation_frames = recipe.calibration_frames, recipe.validation_frames
    out_dir = Path(out_dir)
    params = TINY_PARAMS
    frame = {"height": 192, "width": 192, "style": TINY_STYLE, "seed": seed}
    train_source = SyntheticSource(count=64, split="train", **frame)
    val_source = SyntheticSource(count=6, split="val", **frame)
    spec = {"name": TINY_MODEL["name"], "kwargs": {**TINY_MODEL["kwargs"], "centre_head": centre_head}}
    result = train_segmentation(
        spec, params,
        DatasetCrops(SegmentationDataset(train_source, params, augment=Augment(), crop=128, seed=seed,
                                         centres=centre_head)),
        SegmentationDataset(val_source, params),
        TrainConfig(steps=steps, batch_size=8, seed=seed, threads=threads, warmup=0.0,
                    class_weights=(0.5, 1.0, 1.0, 3.0), val_every_min=None, val_every_steps=8),
        TrainingRun(out_dir / "train", training_data={"train": train_source.describe(), "val": val_source.describe()},
                    log=log),
    )
    calibration = SyntheticSource(count=calibration_frames, split="calibration", **frame)
    validation = SyntheticSource(count=validation_frames, split="test", **frame)
    data = ExportData(calibration=[calibration[i] for i in range(len(calibration))],
                      validation=[validation[i] for i in range(len(validation))],
                      calibration_info=calibration.describe(), validation_info=validation.describe(),
                      scale_fit=[calibration[i] for i in range(len(calibration))],
                      scale_fit_info=calibration.describe())
    return export_checkpoint(result.best, out_dir, name, data, ExportSettings(tolerances=tolerances), log=log)
