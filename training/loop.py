"""The one segmentation training loop: seeded, budgeted, checkpointed, resumable, with metrics.

Every step draws a batch of random crops from a `BatchSource` (cached real smears or synthetic
frames), so the loop knows nothing of where the pixels come from. The budget is a number of steps,
a wall-clock time, or both (whichever ends first); the learning rate warms up, then follows a cosine
over the fraction of the budget spent, so a time-boxed run on a busy CPU still finishes its
schedule. Validation runs on whole frames every `val_every_min` minutes or `val_every_steps` steps
and at the end; `last.pt` is written each time and `best.pt` when the mean per-class Dice
(background included) improves. `--resume last.pt` continues the same schedule where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from runtime.contracts.errors import ConfigError, DataError, ModelError
from runtime.contracts.modelcard import sha256_file
from runtime.inference.preprocess import IGNORE_INDEX, PreprocessParams
from training.checkpoint import load_checkpoint, save_checkpoint
from training.distill import distillation_loss
from training.losses import SegmentationLoss, centre_heatmap_loss
from training.metrics import ConfusionMeter, mean_dice
from training.unet import build_model


class BatchSource(Protocol):
    """Where training crops come from: `batch` returns (images NxCxHxW float32, masks NxHxW int64
    with IGNORE_INDEX, centre heat-maps NxHxW float32 or None when the source has no centre labels)."""

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (recorded in the checkpoint)."""

    steps: int | None = None
    """Stop after this many optimiser steps."""
    minutes: float | None = None
    """Stop after this much wall-clock time (the schedule runs over elapsed time)."""
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: float = 0.03
    """Fraction of the budget over which the learning rate ramps up linearly."""
    seed: int = 0
    class_weights: tuple[float, ...] | None = None
    dice_weight: float = 1.0
    centre_weight: float = 1.0
    threads: int = 2
    val_every_min: float | None = 5.0
    val_every_steps: int | None = None
    distill_weight: float = 1.0
    """Weight of the distillation term when the run has a teacher (training.distill)."""

    def __post_init__(self) -> None:
        if self.steps is None and self.minutes is None:
            raise ConfigError("training needs a budget: steps, minutes or both")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.minutes is not None and self.minutes <= 0:
            raise ConfigError(f"minutes must be positive, got {self.minutes}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if self.class_weights is not None and len(self.class_weights) != 4:
            raise ConfigError(f"class weights: need 4 values, got {len(self.class_weights)}")
        if self.distill_weight < 0:
            raise ConfigError(f"distillation weight must be at least 0, got {self.distill_weight}")
        if self.val_every_min is None and self.val_every_steps is None:
            raise ConfigError("validation needs a period: val_every_min or val_every_steps")

    def budget_fraction(self, step: int, elapsed_s: float) -> float:
        """How much of the budget is spent (0-1): the larger of the step and time fractions."""
        fractions = []
        if self.steps:
            fractions.append(step / self.steps)
        if self.minutes:
            fractions.append(elapsed_s / (60.0 * self.minutes))
        return min(1.0, max(fractions))

    def learning_rate(self, fraction: float) -> float:
        warm = min(1.0, fraction / self.warmup) if self.warmup > 0 else 1.0
        return self.lr * warm * 0.5 * (1.0 + math.cos(math.pi * fraction))


@dataclass
class TrainResult:
    best: Path
    last: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0


def split_outputs(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The U-Net returns logits, or (logits, centres) with a centre head."""
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


def evaluate_model(model: torch.nn.Module, data: Dataset) -> dict[str, Any]:
    """Per-class Dice/IoU on whole frames (batch size 1, network grid); `mean_dice` averages all
    four classes, background included, and is the checkpoint-selection score."""
    meter = ConfusionMeter()
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for item in DataLoader(data, batch_size=1):
            logits, _ = split_outputs(model(item["image"]))
            meter.update(logits.argmax(1).numpy(), item["mask"].numpy())
    model.train(was_training)
    scores = meter.scores()
    return {"per_class": scores, "mean_dice": round(mean_dice(scores, skip=()), 6)}


@dataclass(frozen=True)
class TrainingRun:
    """Where a run writes, how it starts and whom it tells: a fresh schedule, a resumed run
    (`resume`: weights, optimiser, step, elapsed time, best score) or a fine-tune (`init`: another
    checkpoint's weights, or an exported fp32 model's (training.onnx_init), a new schedule), with
    an optional `teacher` whose class probabilities are extra soft targets (training.distill)."""

    out_dir: str | Path
    resume: str | Path | None = None
    init: str | Path | None = None
    training_data: dict[str, Any] | None = None
    """What the model was trained and validated on, recorded in the checkpoint (and the card)."""
    log: Callable[[str], None] = print
    progress: Callable[[float], None] | None = None
    """Called after every step with the share of the budget spent (0-1): a progress bar."""
    teacher: Any = None
    """A training.distill.OnnxTeacher (or any callable: images -> class probabilities)."""


@dataclass
class _Session:
    """One training run in progress: what every validation needs to score and checkpoint it."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    model_spec: dict[str, Any]
    params: PreprocessParams
    config: TrainConfig
    run: TrainingRun
    val_data: Dataset
    state: dict[str, Any]
    best_path: Path
    last_path: Path


def train_segmentation(model_spec: dict[str, Any], params: PreprocessParams, batches: BatchSource,
                       val_data: Dataset, config: TrainConfig, run: TrainingRun) -> TrainResult:
    """Train `build_model(model_spec["name"], **model_spec["kwargs"])`; write last.pt and best.pt in
    `run.out_dir`."""
    resume, init, log = run.resume, run.init, run.log
    if resume is not None and init is not None:
        raise ConfigError("give either resume (continue a run) or init (start from weights), not both")
    out_dir = _writable_dir(run.out_dir)
    torch.manual_seed(config.seed)
    torch.set_num_threads(max(1, config.threads))
    rng = np.random.default_rng(config.seed)
    model = build_model(model_spec["name"], **model_spec.get("kwargs", {}))
    stride = getattr(model, "stride", 1)
    if params.stride % stride:
        raise ConfigError(f"preprocess stride {params.stride} is not a multiple of the model's stride {stride}")
    if len(val_data) == 0:
        raise DataError("validation data is empty")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    criterion = SegmentationLoss(config.class_weights, config.dice_weight)
    state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "best_score": -1.0, "history": []}
    if resume is not None:
        state = _resume(resume, model, optimizer, model_spec, params)
        rng = np.random.default_rng([config.seed, state["step"]])  # fresh draws, not a replay of the first steps
        log(f"resumed from {resume} at step {state['step']} ({state['elapsed_s'] / 60:.1f} min)")
    elif init is not None and Path(init).suffix == ".onnx":
        from training.onnx_init import STAT_BATCHES, init_payload

        stat_rng = np.random.default_rng([config.seed, 1])  # not the training draws
        payload = init_payload(init, [batches.batch(stat_rng, config.batch_size)[0] for _ in range(STAT_BATCHES)])
        if payload["model"] != {"name": model_spec["name"], "kwargs": dict(model_spec.get("kwargs", {}))}:
            raise ConfigError(f"{init}: exported as {payload['model']}, not {model_spec}")
        model.load_state_dict(payload["state_dict"])
        state["init"] = payload["init"]
        log(f"weights from {init} (exported model; normalisation statistics measured on {STAT_BATCHES} batches)")
    elif init is not None:
        model.load_state_dict(_compatible(init, model_spec, params).state_dict)
        state["init"] = {"file": Path(init).name, "sha256": sha256_file(init)}  # the card's lineage
        log(f"weights from {init}")
    if run.teacher is not None:
        state["teacher"] = {"file": Path(getattr(run.teacher, "path", "teacher")).name,
                            "sha256": getattr(run.teacher, "sha256", None), "weight": config.distill_weight}

    session = _Session(model, optimizer, model_spec, params, config, run, val_data, state,
                       best_path=out_dir / "best.pt", last_path=out_dir / "last.pt")
    started = time.monotonic() - state["elapsed_s"]
    last_val_t, last_val_step = time.monotonic(), state["step"]
    model.train()
    while True:
        elapsed = time.monotonic() - started
        fraction = config.budget_fraction(state["step"], elapsed)
        if fraction >= 1.0:
            break
        lr = config.learning_rate(fraction)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = _train_step(model, optimizer, criterion, batches.batch(rng, config.batch_size), config, run.teacher)
        state["step"] += 1
        state["elapsed_s"] = time.monotonic() - started
        if run.progress is not None:
            run.progress(min(1.0, config.budget_fraction(state["step"], state["elapsed_s"])))
        due = ((config.val_every_min is not None and time.monotonic() - last_val_t >= 60.0 * config.val_every_min)
               or (config.val_every_steps is not None and state["step"] - last_val_step >= config.val_every_steps))
        if due and config.budget_fraction(state["step"], state["elapsed_s"]) < 1.0:
            _validate(session, loss)
            last_val_t, last_val_step = time.monotonic(), state["step"]
    if state["step"] > last_val_step or not session.best_path.exists():
        _validate(session, None)
    return TrainResult(best=session.best_path, last=session.last_path, history=state["history"], steps=state["step"])


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, criterion: SegmentationLoss,
                batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None], config: TrainConfig,
                teacher: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    image, mask, heat = batch
    logits, centre_logits = split_outputs(model(image))
    loss = criterion(logits, mask)
    if teacher is not None and config.distill_weight > 0:
        loss = loss + config.distill_weight * distillation_loss(logits, teacher(image))
    if centre_logits is not None and heat is not None and config.centre_weight > 0:
        loss = loss + config.centre_weight * centre_heatmap_loss(centre_logits, heat)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _validate(s: _Session, loss: float | None) -> None:
    t0 = time.monotonic()
    state = s.state
    val = evaluate_model(s.model, s.val_data)
    record = {"step": state["step"], "minutes": round(state["elapsed_s"] / 60.0, 2),
              "train_loss": None if loss is None else round(loss, 5), "val": val,
              "val_seconds": round(time.monotonic() - t0, 2)}
    improved = val["mean_dice"] > state["best_score"]
    if improved:
        state["best_score"] = val["mean_dice"]
    record["best"] = improved
    state["history"].append(record)
    payload = _payload(s, val)
    save_checkpoint(s.last_path, payload)
    if improved:
        save_checkpoint(s.best_path, payload)
    with open(s.best_path.parent / "log.jsonl", "a") as fh:
        fh.write(json.dumps({k: v for k, v in record.items()}) + "\n")
    s.run.log(_record_line(record))


def _payload(s: _Session, val: dict[str, Any]) -> dict[str, Any]:
    state = s.state
    return {
        "model": {"name": s.model_spec["name"], "kwargs": dict(s.model_spec.get("kwargs", {}))},
        "state_dict": s.model.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "preprocess": s.params.to_dict(),
        "epoch": state["step"],
        "step": state["step"],
        "elapsed_s": state["elapsed_s"],
        "best_score": state["best_score"],
        "history": state["history"],
        "metrics": {"val": val, "steps": state["step"]},
        "training_data": s.run.training_data or {},
        "train_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(s.config).items()},
        "init": state.get("init"),
        "teacher": state.get("teacher"),
    }


def _compatible(path: str | Path, model_spec: dict[str, Any], params: PreprocessParams):
    ckpt = load_checkpoint(path)
    if ckpt.model_name != model_spec["name"] or ckpt.model_kwargs != dict(model_spec.get("kwargs", {})):
        raise ConfigError(f"{path}: checkpoint was trained as {ckpt.model_name} {ckpt.model_kwargs}, "
                          f"not {model_spec['name']} {model_spec.get('kwargs', {})}")
    if ckpt.preprocess != params:
        raise ConfigError(f"{path}: checkpoint's preprocessing differs from this run's")
    return ckpt


def _resume(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_spec: dict[str, Any],
            params: PreprocessParams) -> dict[str, Any]:
    ckpt = _compatible(path, model_spec, params)
    model.load_state_dict(ckpt.state_dict)
    if "optimizer" in ckpt.raw:
        optimizer.load_state_dict(ckpt.raw["optimizer"])
    return {
        "step": int(ckpt.raw.get("step", ckpt.epoch)), "elapsed_s": float(ckpt.raw.get("elapsed_s", 0.0)),
        "best_score": float(ckpt.raw.get("best_score", -1.0)), "history": list(ckpt.raw.get("history", [])),
        "init": ckpt.raw.get("init"),
    }


def _record_line(record: dict[str, Any]) -> str:
    per = record["val"]["per_class"]
    parts = " ".join(
        f"{name} {v['dice']:.3f}/{v['iou']:.3f}" if v["dice"] is not None else f"{name} -" for name, v in per.items()
    )
    mark = " *best" if record["best"] else ""
    return (f"step {record['step']} ({record['minutes']:.1f} min): loss {record['train_loss']} | val mean Dice "
            f"{record['val']['mean_dice']:.3f} | Dice/IoU {parts}{mark}")


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
