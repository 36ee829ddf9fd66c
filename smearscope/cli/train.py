"""`smearscope train segmentation`: train the U-Net on synthetic smears or a labelled data folder."""

from __future__ import annotations

from pathlib import Path

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def train() -> None:
    """Train models on a workstation (needs the [train] extra: torch)."""


@train.command("segmentation")
@click.option("--data", required=True, metavar="synthetic|PATH",
              help="'synthetic' for generated smears, or a labelled data folder (TXL-PBC layout: "
                   "images/{train,val}, labels/{train,val}).")
@click.option("--format", "data_format", default="txl_pbc", show_default=True,
              help="Layout of a data folder (a registered source name).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for last.pt, best.pt and metrics.json.")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(1), help="Maximum number of epochs.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), help="Wall-clock budget; stops after it.")
@click.option("--base-width", default=16, show_default=True, type=click.IntRange(1), help="Channels of the first level.")
@click.option("--depth", default=4, show_default=True, type=click.IntRange(1, 4), help="Down-samplings (stride 2**depth <= 16).")
@click.option("--centre-head/--no-centre-head", default=False, show_default=True,
              help="Also learn a red-cell centre heat-map (output 'centres') for counting touching cells.")
@click.option("--crop", default=256, show_default=True, type=click.IntRange(16), help="Training crop side on the network grid (multiple of 16).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=3e-3, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Peak learning rate (cosine decay).")
@click.option("--target-rbc-px", default=40.0, show_default=True, type=click.FloatRange(min=4),
              help="Red-cell diameter at the network input (stored in the model card).")
@click.option("--synthetic-frames", default=256, show_default=True, type=click.IntRange(1),
              help="Training frames when --data synthetic (validation uses a quarter as many, other seeds).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1), help="CPU threads for torch.")
@click.option("--resume", type=click.Path(dir_okay=False, path_type=Path), help="Continue from a checkpoint (last.pt).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar per epoch.")
def segmentation(data: str, data_format: str, out_dir: Path, epochs: int, minutes: float | None, base_width: int,
                 depth: int, centre_head: bool, crop: int, batch_size: int, lr: float, target_rbc_px: float,
                 synthetic_frames: int, seed: int, threads: int, resume: Path | None, progress: bool) -> None:
    """Train the segmentation U-Net; writes OUT/last.pt every epoch and OUT/best.pt on improvement.

    \b
    Examples:
      smearscope train segmentation --data synthetic --out runs/syn --minutes 10
      smearscope train segmentation --data ../shared/data/txl_pbc --out runs/txl --epochs 40 --centre-head
    """
    from runtime.errors import SmearscopeError

    try:
        _train(**click.get_current_context().params)
    except SmearscopeError as exc:
        raise click.ClickException(str(exc)) from exc


def _train(data: str, data_format: str, out_dir: Path, epochs: int, minutes: float | None, base_width: int,
           depth: int, centre_head: bool, crop: int, batch_size: int, lr: float, target_rbc_px: float,
           synthetic_frames: int, seed: int, threads: int, resume: Path | None, progress: bool) -> None:
    import json

    from runtime.preprocess import PreprocessParams
    from training.datasets import Augment, SegmentationDataset, build_source
    from training.loop import TrainConfig, train_segmentation

    params = PreprocessParams(target_rbc_diameter_px=target_rbc_px, stride=16)
    config = TrainConfig(epochs=epochs, minutes=minutes, batch_size=batch_size, lr=lr, seed=seed, threads=threads)
    if data == "synthetic":
        # 320 px frames at 0.15-0.3 µm/px still cover a 256 px crop after scale normalisation.
        size = {"height": 320, "width": 320}
        train_src = build_source("synthetic", None, "train", count=synthetic_frames, seed=seed, **size)
        val_src = build_source("synthetic", None, "val", count=max(4, synthetic_frames // 4), seed=seed, **size)
    else:
        train_src = build_source(data_format, data, "train")
        val_src = build_source(data_format, data, "val")
    spec = {"name": "unet", "kwargs": {"base_width": base_width, "depth": depth, "centre_head": centre_head}}
    train_ds = SegmentationDataset(train_src, params, augment=Augment(), crop=crop, seed=seed, centres=centre_head)
    val_ds = SegmentationDataset(val_src, params, centres=centre_head)
    click.echo(f"training unet {spec['kwargs']} on {len(train_src)} {train_src.name} frames "
               f"(validation: {len(val_src)}), output {out_dir}")
    result = train_segmentation(
        spec, params, train_ds, val_ds, config, out_dir, resume=resume, progress=progress,
        training_data={"train": train_src.describe(), "val": val_src.describe()},
    )
    (out_dir / "metrics.json").write_text(json.dumps(result.history, indent=2) + "\n")
    best = max(result.history, key=lambda r: r["val"]["mean_dice"]) if result.history else None
    summary = f"best mean Dice {best['val']['mean_dice']:.3f} (epoch {best['epoch']})" if best else "no new epochs"
    click.echo(f"done ({result.stopped}): {summary}; best checkpoint {result.best}")
