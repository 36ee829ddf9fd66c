"""Training checkpoints: model spec + weights + preprocessing + metrics, saved atomically.

A checkpoint carries everything export needs (how to rebuild the model, the preprocessing it was
trained with, what data it saw, its validation metrics), so `smearscope export` takes one file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from runtime.contracts.errors import ModelError
from runtime.inference.preprocess import PreprocessParams
from training.unet import build_model

CHECKPOINT_FORMAT = "smearscope-checkpoint/1"
_REQUIRED = ("format", "model", "state_dict", "preprocess", "epoch")


@dataclass
class Checkpoint:
    """A loaded checkpoint; `build()` returns the model in eval mode with its weights."""

    path: Path
    model_name: str
    model_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    preprocess: PreprocessParams
    epoch: int
    metrics: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def build(self) -> nn.Module:
        model = build_model(self.model_name, **self.model_kwargs)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise ModelError(f"{self.path}: weights do not fit model {self.model_name!r} ({str(exc).splitlines()[0]})") from exc
        return model.eval()


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` (see training.loop) atomically: a crash never leaves half a checkpoint."""
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, **payload}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint, with a clear ModelError for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint does not exist")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: checkpoint file is empty")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, runtime) for a damaged file
        raise ModelError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from exc
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not a smearscope checkpoint (expected format {CHECKPOINT_FORMAT})")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ModelError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return Checkpoint(
        path=path,
        model_name=raw["model"]["name"],
        model_kwargs=dict(raw["model"]["kwargs"]),
        state_dict=raw["state_dict"],
        preprocess=PreprocessParams.from_dict(raw["preprocess"]),
        epoch=int(raw["epoch"]),
        metrics=raw.get("metrics") or {},
        training_data=raw.get("training_data") or {},
        raw=raw,
    )
