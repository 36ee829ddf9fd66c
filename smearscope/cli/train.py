"""`smearscope train segmentation`: train the U-Net on real smears (TXL-PBC) or synthetic ones."""

from __future__ import annotations

from pathlib import Path

import click


ARCH_DEFAULTS = {"lite_unet": {"base_width": 32, "depth": 3}, "unet": {"base_width": 16, "depth": 4}}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def train() -> None:
    """Train models on a workstation (needs the [train] extra: torch)."""


@train.command("segmentation")
@click.option("--data", required=True, metavar="synthetic|PATH",
              help="'synthetic' for generated smears, or a TXL-PBC data folder (images/{train,val}, "
                   "labels/{train,val}); only the train split updates weights, val picks the checkpoint.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for last.pt, best.pt, log.jsonl and metrics.json.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True),
              help="Wall-clock budget; the learning-rate schedule runs over it.")
@click.option("--steps", type=click.IntRange(1), help="Step budget (with --minutes, whichever ends first).")
@click.option("--arch", type=click.Choice(["lite_unet", "unet"]), default="lite_unet", show_default=True,
              help="lite_unet: the edge network (stride-2 stem, levels at half resolution and below); "
                   "unet: the full-resolution U-Net of model version 3.")
@click.option("--base-width", type=click.IntRange(1),
              help="Channels of the first level  [default: 32 for lite_unet, 16 for unet].")
@click.option("--depth", type=click.IntRange(1, 4),
              help="Down-samplings; the network stride (lite_unet stem stride x 2**depth, unet 2**depth) must be <= 16  "
                   "[default: 3 for lite_unet, 4 for unet].")
@click.option("--stem-stride", type=click.Choice(["2", "4"]), default="2", show_default=True,
              help="lite_unet: the top level at half the input's resolution (2, the shipped models) or a "
                   "quarter (4: fewer full-size activations, wider layers; benchmarks.arch_candidates).")
@click.option("--centre-head/--no-centre-head", default=True, show_default=True,
              help="Also learn a red-cell centre heat-map (output 'centres') for counting touching cells.")
@click.option("--crop", default=192, show_default=True, type=click.IntRange(16),
              help="Training crop side on the network grid (multiple of 16).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=3e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate (linear warm-up, then cosine decay over the budget).")
@click.option("--weight-decay", default=1e-4, show_default=True, type=click.FloatRange(min=0))
@click.option("--class-weights", nargs=4, type=float, default=(1.0, 1.0, 1.0, 2.0), show_default=True,
              help="Cross-entropy weights for background, RBC, WBC, platelet.")
@click.option("--centre-weight", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Weight of the centre heat-map loss.")
@click.option("--target-rbc-px", default=32.0, show_default=True, type=click.FloatRange(min=4),
              help="Red-cell diameter at the network input (stored in the model card).")
@click.option("--ignore-ring", default=2, show_default=True, type=click.IntRange(0),
              help="TXL-PBC: width (network px) of the band around box outlines the loss skips.")
@click.option("--ring-classes", default="rbc,wbc,platelet", show_default=True, metavar="LIST",
              help="TXL-PBC: comma-separated classes whose outlines get that band.")
@click.option("--holdout", default=0, show_default=True, type=click.IntRange(0), metavar="N",
              help="TXL-PBC: train on all but the last N train frames (by name) and validate on those N "
                   "instead of val, so recipes are compared without reading val (docs/segmentation.md).")
@click.option("--val-every-min", default=5.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Validate (and write last.pt, best.pt on improvement) this often.")
@click.option("--val-images", default=96, show_default=True, type=click.IntRange(1),
              help="Validation frames, evenly spaced over the val split (or the --holdout frames).")
@click.option("--synthetic-frames", default=256, show_default=True, type=click.IntRange(1),
              help="Training frames when --data synthetic (validation uses a quarter as many, other seeds).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where resampled training images are cached (default: cache/ beside --out).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1), help="CPU threads for torch.")
@click.option("--resume", type=click.Path(dir_okay=False, path_type=Path), help="Continue a run from its last.pt.")
@click.option("--init", type=click.Path(dir_okay=False, path_type=Path),
              help="Start a new schedule from a checkpoint's weights, or from an exported fp32 model "
                   "(segmentation.fp32.onnx with its card) when no checkpoint is left (fine-tuning).")
@click.option("--teacher", type=click.Path(dir_okay=False, path_type=Path),
              help="Distil from an exported fp32 model (e.g. models/v3/segmentation.fp32.onnx, version 3): its class "
                   "probabilities on each crop are extra soft targets. Needs the same preprocessing.")
@click.option("--distill-weight", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Weight of the distillation term (with --teacher).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar over the budget.")
def segmentation(data: str, out_dir: Path, minutes: float | None, steps: int | None, arch: str,
                 base_width: int | None, depth: int | None, stem_stride: str,
                 centre_head: bool, crop: int, batch_size: int, lr: float, weight_decay: float,
                 class_weights: tuple[float, ...], centre_weight: float, target_rbc_px: float, ignore_ring: int,
                 ring_classes: str, holdout: int, val_every_min: float, val_images: int,
                 synthetic_frames: int,
                 cache_dir: Path | None, seed: int, threads: int, resume: Path | None, init: Path | None,
                 teacher: Path | None, distill_weight: float, progress: bool) -> None:
    """Train the segmentation U-Net; writes OUT/last.pt at each validation and OUT/best.pt on improvement.

    \b
    The lite network, the shipped default (models/; its versions' recipes are in docs/segmentation.md):
      smearscope train segmentation --data ../shared/data/txl_pbc --out runs/lite32 --minutes 80 --lr 2e-3
    Version 3, the earlier default kept for comparison (models/v3; the full-resolution U-Net):
      smearscope train segmentation --arch unet --data ../shared/data/txl_pbc --out runs/seg --minutes 105
    Fine-tuning the lite network from a checkpoint (or an export), distilled from version 3:
      smearscope train segmentation --data ../shared/data/txl_pbc --out runs/lite-v6 --minutes 80 --lr 5e-4
        --init runs/lite-kd/last.pt --teacher models/v3/segmentation.int8.onnx --ring-classes rbc,wbc
    A quick run on generated smears:
      smearscope train segmentation --data synthetic --out runs/syn --minutes 10
    A recipe to compare without reading val (then: smearscope evaluate --split train --holdout 200):
      smearscope train segmentation --data ../shared/data/txl_pbc --out runs/try --steps 500 --holdout 200
    """
    from runtime.contracts.errors import SmearscopeError

    try:
        import dataclasses
        import json
        import sys

        from runtime.contracts.errors import ConfigError
        from runtime.inference.preprocess import PreprocessParams
        from training.datasets import Augment, DatasetCrops, SegmentationDataset, build_source, subset
        from training.loop import TrainConfig, TrainingRun, train_segmentation

        if minutes is None and steps is None:
            raise ConfigError("give a budget: --minutes, --steps or both")
        params = PreprocessParams(target_rbc_diameter_px=target_rbc_px, stride=16)
        config = TrainConfig(steps=steps, minutes=minutes, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                             seed=seed, class_weights=tuple(class_weights), centre_weight=centre_weight,
                             threads=threads, val_every_min=val_every_min, distill_weight=distill_weight)
        if data == "synthetic" and holdout:
            raise ConfigError("--holdout applies to TXL-PBC data, not synthetic frames")
        if data == "synthetic":
            # 320 px frames at 0.15-0.3 µm/px still cover the crop after scale normalisation.
            size = {"height": 320, "width": 320}
            train_src = build_source("synthetic", None, "train", count=synthetic_frames, seed=seed, **size)
            val_src = build_source("synthetic", None, "val", count=max(4, synthetic_frames // 4), seed=seed, **size)
            batches = DatasetCrops(SegmentationDataset(train_src, params, augment=Augment(), crop=crop, seed=seed,
                                                       centres=centre_head))
        else:
            from training.txl_crops import Augment as CropAugment, cached_crops
            from training.txl_pbc import Part

            rings = tuple(name.strip() for name in ring_classes.split(",") if name.strip())
            augment = CropAugment(ignore_ring_px=ignore_ring, ring_classes=rings)
            part = Part(holdout)
            val_src = (build_source("txl_pbc", data, "train", part=Part(holdout, held=True)) if holdout
                       else build_source("txl_pbc", data, "val"))
            batches = cached_crops(data, params, crop, cache_dir or out_dir.parent / "cache", augment=augment,
                                   part=part)
        val_ds = SegmentationDataset(val_src, params)
        picked = list(range(len(val_ds)))[:: max(1, len(val_ds) // val_images)][:val_images]
        base_width = base_width or ARCH_DEFAULTS[arch]["base_width"]
        depth = depth or ARCH_DEFAULTS[arch]["depth"]
        from training.unet import build_model

        shape: dict[str, int] = {"base_width": base_width, "depth": depth}
        if stem_stride != "2":
            if arch != "lite_unet":
                raise ConfigError(f"--stem-stride {stem_stride}: only lite_unet has a stride-2 stem to change")
            shape["stem_stride"] = int(stem_stride)
        stride = build_model(arch, **shape).stride
        if stride > params.stride:
            raise ConfigError(f"--depth {depth}: {arch} stride {stride} exceeds the preprocessing stride {params.stride}")
        spec = {"name": arch, "kwargs": {**shape, "centre_head": centre_head}}
        train_info = {**batches.describe(), "trainer": "smearscope train segmentation"}
        click.echo(f"training {arch} {spec['kwargs']} on {train_info.get('frames', '?')} {train_info.get('name', data)} "
                   f"frames (validation: {len(picked)} of {len(val_src)}{' held-out train' if holdout else ''}), "
                   f"output {out_dir}")
        if teacher is not None:
            from training.distill import OnnxTeacher

            train_info["teacher"] = teacher.name
        run = TrainingRun(out_dir, resume=resume, init=init, log=click.echo,
                          training_data={"train": train_info, "val": val_src.describe()},
                          teacher=OnnxTeacher(teacher, params, threads) if teacher is not None else None)
        if progress:
            bar = click.progressbar(length=1000, label="training", file=sys.stderr, show_percent=True)
            shown = [0]

            def advance(fraction: float) -> None:
                target = int(1000 * fraction)
                if target > shown[0]:
                    bar.update(target - shown[0])
                    shown[0] = target

            run = dataclasses.replace(run, progress=advance)
        try:
            result = train_segmentation(spec, params, batches, subset(val_ds, picked), config, run)
        finally:
            if progress:
                bar.render_finish()
        (out_dir / "metrics.json").write_text(json.dumps(result.history, indent=2) + "\n")
        best = max(result.history, key=lambda r: r["val"]["mean_dice"]) if result.history else None
        summary = f"best mean Dice {best['val']['mean_dice']:.3f} (step {best['step']})" if best else "nothing new"
        click.echo(f"done after {result.steps} steps: {summary}; best checkpoint {result.best}")
    except SmearscopeError as exc:
        from smearscope.cli.entry import as_user_error

        raise as_user_error(exc) from None  # one line; exit 2 for config/model, 1 for data
