"""The segmentation training loop: seeded, time-boxed, checkpointed, resumable, with metrics.

Each epoch trains on random crops, then validates on whole frames and reports per-class Dice/IoU.
`last.pt` is written every epoch and `best.pt` whenever the mean cell-class Dice improves, so an
interrupted run resumes from `last.pt` and export takes `best.pt`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from runtime.classes import NUM_CLASSES
from runtime.errors import ConfigError, DataError, ModelError
from runtime.preprocess import IGNORE_INDEX, PreprocessParams
from training.checkpoint import load_checkpoint, save_checkpoint
from training.losses import SegmentationLoss, centre_focal_loss
from training.metrics import ConfusionMeter, mean_dice
from training.unet import build_model


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (recorded in the checkpoint)."""

    epochs: int = 30
    minutes: float | None = None
    """Wall-clock budget for this run; training stops after the step that exceeds it."""
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    class_weights: tuple[float, ...] | None = None
    dice_weight: float = 1.0
    centre_weight: float = 1.0
    threads: int = 2
    workers: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.minutes is not None and self.minutes <= 0:
            raise ConfigError(f"minutes must be positive, got {self.minutes}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if self.class_weights is not None and len(self.class_weights) != NUM_CLASSES:
            raise ConfigError(f"class weights: need {NUM_CLASSES} values, got {len(self.class_weights)}")


@dataclass
class TrainResult:
    best: Path
    last: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = "epochs"


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Accept dict batches (training.datasets) or (image, mask[, centres]) tuples."""
    if isinstance(batch, dict):
        return batch["image"], batch["mask"], batch.get("centres"), batch.get("has_centres")
    image, mask, *rest = batch
    centres = rest[0] if rest else None
    has = torch.ones(image.shape[0], dtype=torch.bool) if centres is not None else None
    return image, mask, centres, has


def _split_outputs(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


def evaluate_model(model: torch.nn.Module, data: Dataset) -> dict[str, Any]:
    """Per-class Dice/IoU of a model on a dataset of whole frames (batch size 1)."""
    meter = ConfusionMeter()
    model.eval()
    with torch.inference_mode():
        for item in DataLoader(data, batch_size=1):
            image, mask, _, _ = _unpack(item)
            logits, _ = _split_outputs(model(image))
            meter.update(logits.argmax(1).numpy(), mask.numpy())
    scores = meter.scores()
    return {"per_class": scores, "mean_dice": round(mean_dice(scores), 6)}


def train_segmentation(
    model_spec: dict[str, Any],
    params: PreprocessParams,
    train_data: Dataset,
    val_data: Dataset,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    training_data: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = click.echo,
) -> TrainResult:
    """Train `build_model(model_spec["name"], **model_spec["kwargs"])`; write last.pt and best.pt in out_dir."""
    out_dir = _writable_dir(out_dir)
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    model = build_model(model_spec["name"], **model_spec.get("kwargs", {}))
    stride = getattr(model, "stride", 1)
    if params.stride % stride:
        raise ConfigError(f"preprocess stride {params.stride} is not a multiple of the model's stride {stride}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    criterion = SegmentationLoss(config.class_weights, config.dice_weight)
    state = {"epoch": 0, "step": 0, "best_score": -1.0, "history": []}
    if resume is not None:
        state = _resume(resume, model, optimizer, model_spec, params)
        log(f"resumed from {resume} at epoch {state['epoch']}")
    if len(train_data) == 0:
        raise DataError("training data is empty")

    steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    budget_s = config.minutes * 60 if config.minutes else None
    started = time.monotonic()
    best_path, last_path = out_dir / "best.pt", out_dir / "last.pt"
    stopped = "epochs"
    while state["epoch"] < config.epochs:
        epoch = state["epoch"] + 1
        if hasattr(train_data, "set_epoch"):
            train_data.set_epoch(epoch)
        loader = DataLoader(
            train_data, batch_size=config.batch_size, shuffle=True, drop_last=False, num_workers=config.workers,
            generator=torch.Generator().manual_seed(config.seed * 10_007 + epoch),
        )
        model.train()
        t0, losses = time.monotonic(), []
        out_of_time = False
        bar = click.progressbar(length=len(loader), label=f"epoch {epoch}/{config.epochs}", file=sys.stderr) if progress else None
        try:
            for batch in loader:
                frac = state["step"] / total_steps
                if budget_s:
                    frac = max(frac, (time.monotonic() - started) / budget_s)
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
                loss = _train_step(model, optimizer, criterion, batch, config)
                losses.append(loss)
                state["step"] += 1
                if bar is not None:
                    bar.update(1)
                if budget_s and time.monotonic() - started >= budget_s:
                    out_of_time = True
                    break
        finally:
            if bar is not None:
                bar.render_finish()
        val = evaluate_model(model, val_data)
        state["epoch"] = epoch
        record = {
            "epoch": epoch, "steps": state["step"], "train_loss": round(float(np.mean(losses)), 5) if losses else None,
            "val": val, "seconds": round(time.monotonic() - t0, 2),
        }
        state["history"].append(record)
        improved = val["mean_dice"] > state["best_score"]
        if improved:
            state["best_score"] = val["mean_dice"]
        payload = _payload(model, optimizer, model_spec, params, config, state, val, training_data)
        save_checkpoint(last_path, payload)
        if improved:
            save_checkpoint(best_path, payload)
        log(_epoch_line(record, improved))
        if out_of_time:
            stopped = "time budget"
            break
    if not best_path.exists():  # resumed a finished run: nothing new, the old best stands
        raise ModelError(f"{out_dir}: no best.pt; nothing was trained (epochs already reached?)")
    return TrainResult(best=best_path, last=last_path, history=state["history"], stopped=stopped)


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, criterion: SegmentationLoss, batch: Any,
                config: TrainConfig) -> float:
    image, mask, centres, has_centres = _unpack(batch)
    logits, centre_logits = _split_outputs(model(image))
    loss = criterion(logits, mask)
    if centre_logits is not None and centres is not None and config.centre_weight > 0:
        valid = (mask != IGNORE_INDEX) & has_centres.view(-1, 1, 1)
        if valid.any():
            loss = loss + config.centre_weight * centre_focal_loss(centre_logits, centres, valid)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _payload(model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_spec: dict[str, Any],
             params: PreprocessParams, config: TrainConfig, state: dict[str, Any], val: dict[str, Any],
             training_data: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "model": {"name": model_spec["name"], "kwargs": dict(model_spec.get("kwargs", {}))},
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "preprocess": params.to_dict(),
        "epoch": state["epoch"],
        "step": state["step"],
        "best_score": state["best_score"],
        "history": state["history"],
        "metrics": {"val": val},
        "training_data": training_data or {},
        "train_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
    }


def _resume(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_spec: dict[str, Any],
            params: PreprocessParams) -> dict[str, Any]:
    ckpt = load_checkpoint(path)
    if ckpt.model_name != model_spec["name"] or ckpt.model_kwargs != dict(model_spec.get("kwargs", {})):
        raise ConfigError(f"{path}: checkpoint was trained as {ckpt.model_name} {ckpt.model_kwargs}, "
                          f"not {model_spec['name']} {model_spec.get('kwargs', {})}")
    if ckpt.preprocess != params:
        raise ConfigError(f"{path}: checkpoint's preprocessing differs from this run's")
    model.load_state_dict(ckpt.state_dict)
    if "optimizer" in ckpt.raw:
        optimizer.load_state_dict(ckpt.raw["optimizer"])
    return {
        "epoch": ckpt.epoch, "step": int(ckpt.raw.get("step", 0)),
        "best_score": float(ckpt.raw.get("best_score", -1.0)), "history": list(ckpt.raw.get("history", [])),
    }


def _epoch_line(record: dict[str, Any], improved: bool) -> str:
    per = record["val"]["per_class"]
    parts = " ".join(
        f"{name} {v['dice']:.3f}/{v['iou']:.3f}" if v["dice"] is not None else f"{name} -" for name, v in per.items()
    )
    mark = " *best" if improved else ""
    return (f"epoch {record['epoch']}: loss {record['train_loss']} | val mean Dice {record['val']['mean_dice']:.3f} "
            f"| Dice/IoU {parts} | {record['seconds']}s{mark}")


def _writable_dir(path: str | Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{path}: output folder is not writable ({exc.strerror or exc})") from exc
    return path
