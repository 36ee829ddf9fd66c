"""Crop samplers compared on held-out train frames: does petroscope's class balancing help the rare classes?

Two networks, identical but for where their crops come from (frames: training.txl_crops.CachedCrops,
what `smearscope train segmentation` uses; petroscope: benchmarks/petroscope_sampler.py), are
trained by the one loop for the same number of steps on the TXL-PBC train split without its last
HOLDOUT frames by name, with the train command's default settings (`Recipe`), and validated once,
at the end, on those frames (so best.pt is the final weights: nothing is selected). Each is exported
as the shipped models are (int8 calibrated on 32 frames, checked against fp32 on 16, inference plan
fitted on 200), all of them frames it trained on, and the held-out frames are then scored through
the device path (training.evaluate, as `smearscope evaluate --split train --holdout HOLDOUT` does).
val is never read. Needs `pip install petroscope==0.0.12`.

    python -m benchmarks.sampler_comparison --data ../shared/data/txl_pbc --out runs/samplers --steps 500

Both trainings run at once (one thread each, reniced); `--stage export` or `--stage evaluate`
repeats the later stages on existing runs. Writes OUT/report.json (per image too) and OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLERS = ("frames", "petroscope")


@dataclass(frozen=True)
class Recipe:
    """The settings of both runs: `smearscope train segmentation`'s defaults (a test keeps them equal),
    one thread each."""

    arch: str = "lite_unet"
    base_width: int = 32
    depth: int = 3
    centre_head: bool = True
    target_rbc_px: float = 32.0
    crop: int = 192
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    class_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 2.0)
    centre_weight: float = 1.0
    ignore_ring: int = 2
    val_images: int = 96
    threads: int = 1


@dataclass(frozen=True)
class Comparison:
    """What both runs share."""

    data: Path
    out: Path
    steps: int
    holdout: int = 200
    seed: int = 0
    nice: int = 15
    recipe: Recipe = Recipe()

    def run_dir(self, sampler: str) -> Path:
        return self.out / sampler

    def model(self, sampler: str) -> Path:
        return self.out / "models" / f"sampler-{sampler}.int8.onnx"


def train_both(c: Comparison) -> None:
    """Both samplers at once, each in its own reniced process; the shared cache is built first."""
    from runtime.inference.preprocess import PreprocessParams
    from training.txl_crops import build_cache

    build_cache(c.data, "train", PreprocessParams(target_rbc_diameter_px=c.recipe.target_rbc_px, stride=16),
                c.out / "cache")
    jobs = []
    for sampler in SAMPLERS:
        args = [sys.executable, "-m", "benchmarks.sampler_comparison", "--data", str(c.data), "--out", str(c.out),
                "--steps", str(c.steps), "--holdout", str(c.holdout), "--seed", str(c.seed),
                "--stage", f"train-{sampler}"]
        log = open(c.out / f"train-{sampler}.log", "w")
        jobs.append((sampler, log, subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                                    preexec_fn=lambda: os.nice(c.nice))))
    failed = []
    for sampler, log, job in jobs:
        if job.wait() != 0:
            failed.append(sampler)
        log.close()
    if failed:
        raise SystemExit(f"training failed for {', '.join(failed)}: see {c.out}/train-*.log")


def train_one(c: Comparison, sampler: str):
    """One arm: the train command's TXL-PBC set-up with the held-out part, crops from `sampler`."""
    from runtime.inference.preprocess import PreprocessParams
    from training.datasets import SegmentationDataset, subset
    from training.loop import TrainConfig, TrainingRun, train_segmentation
    from training.txl_crops import Augment, cached_crops
    from training.txl_pbc import Part, TxlPbcSource

    r = c.recipe
    params = PreprocessParams(target_rbc_diameter_px=r.target_rbc_px, stride=16)
    augment, part, cache = Augment(ignore_ring_px=r.ignore_ring), Part(c.holdout), c.out / "cache"
    if sampler == "petroscope":
        from benchmarks.petroscope_sampler import petroscope_crops

        batches = petroscope_crops(c.data, params, r.crop, cache, augment=augment, part=part, seed=c.seed)
    else:
        batches = cached_crops(c.data, params, r.crop, cache, augment=augment, part=part)
    val_src = TxlPbcSource(c.data, "train", part=Part(c.holdout, held=True))
    val = SegmentationDataset(val_src, params)
    picked = list(range(len(val)))[:: max(1, len(val) // r.val_images)][: r.val_images]
    spec = {"name": r.arch, "kwargs": {"base_width": r.base_width, "depth": r.depth, "centre_head": r.centre_head}}
    config = TrainConfig(steps=c.steps, batch_size=r.batch_size, lr=r.lr, weight_decay=r.weight_decay, seed=c.seed,
                         class_weights=r.class_weights, centre_weight=r.centre_weight, threads=r.threads,
                         val_every_min=None, val_every_steps=c.steps)
    run = TrainingRun(c.run_dir(sampler), log=lambda line: print(line, flush=True), training_data={
        "train": {**batches.describe(), "trainer": "benchmarks.sampler_comparison"}, "val": val_src.describe()})
    return train_segmentation(spec, params, batches, subset(val, picked), config, run)


def export_both(c: Comparison) -> None:
    """Each best.pt to ONNX fp32 + int8 with cards, every frame it reads from the training part."""
    from export.pipeline import ExportData, ExportSettings, export_checkpoint
    from export.quantize import evenly_spaced, frames_from_source
    from training.txl_pbc import Part, TxlPbcSource

    source = TxlPbcSource(c.data, "train", part=Part(c.holdout))
    calibration = frames_from_source(source, 32)
    checks = [source[int(i)] for i in (evenly_spaced(len(source), 16) + len(source) // 64) % len(source)]
    for sampler in SAMPLERS:
        fit = (source[int(i)] for i in evenly_spaced(len(source), 200))
        data = ExportData(calibration=calibration, validation=checks, calibration_info=source.describe(),
                          validation_info=source.describe(), scale_fit=fit, scale_fit_info=source.describe())
        export_checkpoint(c.run_dir(sampler) / "best.pt", c.out / "models", f"sampler-{sampler}", data,
                          ExportSettings(flip_average=True), log=print)


def evaluate_both(c: Comparison) -> dict[str, Any]:
    """Both int8 models on the held-out frames, the device's way; writes report.json and table.md."""
    from training.evaluate import evaluate, format_report, onnx_method
    from training.label_checks import check_split
    from training.txl_pbc import Part

    flagged = check_split(c.data, "train")
    methods = [onnx_method(c.model(s), name=s, threads=2) for s in SAMPLERS]
    report = evaluate(c.data, "train", methods, flagged=set(flagged), part=Part(c.holdout, held=True))
    report["flagged"] = {stem: issues for stem, issues in flagged.items()}
    report["runs"] = {s: _run_info(c.run_dir(s) / "best.pt") for s in SAMPLERS}
    (c.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    table = comparison_table(report)
    (c.out / "table.md").write_text(table + "\n")
    print(format_report(report))
    print(table)
    return report


def _run_info(checkpoint: Path) -> dict[str, Any]:
    from training.checkpoint import load_checkpoint

    raw = load_checkpoint(checkpoint).raw
    return {"steps": raw.get("step"), "minutes": round(float(raw.get("elapsed_s", 0.0)) / 60.0, 1),
            "sampler": (raw.get("training_data") or {}).get("train", {}).get("sampler")}


def comparison_table(report: dict[str, Any]) -> str:
    """Markdown: per sampler and subset, Dice per class, counts and object F1 of the rare classes."""
    lines = ["| sampler | steps | subset | background | RBC | WBC | platelet | RBC MAPE % | WBC exact % | "
             "platelet MAE | WBC F1 | platelet F1 |", "|---" * 12 + "|"]
    for name, result in report["methods"].items():
        for subset, key in (("all", "all"), ("clean", "without_flagged_labels")):
            s = result[key]
            d, o = s["dice"], s["objects_iou50"]
            values = [d["background"], d["rbc"], d["wbc"], d["platelet"], s["rbc_count_mape_pct"],
                      s["wbc_count_exact_pct"], s["platelet_count_mae"], o["wbc"]["f1"], o["platelet"]["f1"]]
            formats = ["{:.3f}"] * 4 + ["{:.2f}", "{:.1f}"] + ["{:.3f}"] * 3
            cells = ["-" if v is None else f.format(v) for v, f in zip(values, formats)]
            head = f"| {name} | {report['runs'][name]['steps']} | {subset} {s['images']} | "
            lines.append(head + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="TXL-PBC folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True, help="training steps of each run (same for both)")
    parser.add_argument("--holdout", type=int, default=200, help="last N train frames by name, never trained on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", choices=("all", "export", "evaluate", *(f"train-{s}" for s in SAMPLERS)),
                        default="all", help="all: train both, export, evaluate; export: from existing runs; "
                                            "evaluate: existing models; train-SAMPLER: one arm (what `all` starts)")
    args = parser.parse_args(argv)
    c = Comparison(args.data, args.out, args.steps, args.holdout, args.seed)
    c.out.mkdir(parents=True, exist_ok=True)
    if args.stage.startswith("train-"):
        train_one(c, args.stage.removeprefix("train-"))
        return
    if args.stage == "all":
        train_both(c)
    if args.stage in ("all", "export"):
        export_both(c)
    evaluate_both(c)


if __name__ == "__main__":
    main()
