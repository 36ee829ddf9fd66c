"""Per-class Dice and IoU from confusion counts (numpy: used by training and by export validation)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from runtime.contracts.classes import CLASS_NAMES
from runtime.inference.preprocess import IGNORE_INDEX


def confusion_counts(pred: np.ndarray, truth: np.ndarray, num_classes: int = len(CLASS_NAMES),
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """num_classes x num_classes int64 counts; rows = truth, columns = prediction; ignored pixels skipped."""
    pred = np.asarray(pred).ravel().astype(np.int64)
    truth = np.asarray(truth).ravel().astype(np.int64)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction and truth differ in size: {pred.size} vs {truth.size}")
    keep = (truth != ignore_index) & (truth < num_classes) & (truth >= 0)
    return np.bincount(truth[keep] * num_classes + pred[keep], minlength=num_classes**2).reshape(num_classes, num_classes)


class ConfusionMeter:
    """Accumulates confusion counts over many frames."""

    def __init__(self, num_classes: int = len(CLASS_NAMES)) -> None:
        self.counts = np.zeros((num_classes, num_classes), np.int64)

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        self.counts += confusion_counts(pred, truth, self.counts.shape[0])

    def scores(self, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, dict[str, float | None]]:
        return dice_iou(self.counts, class_names)


def dice_iou(counts: np.ndarray, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, dict[str, float | None]]:
    """{class: {"dice", "iou"}} from confusion counts; None where a class is absent from both sides."""
    tp = np.diag(counts).astype(np.float64)
    fp = counts.sum(axis=0) - tp
    fn = counts.sum(axis=1) - tp
    out: dict[str, dict[str, float | None]] = {}
    for i, name in enumerate(class_names):
        denom = 2 * tp[i] + fp[i] + fn[i]
        out[name] = {
            "dice": round(float(2 * tp[i] / denom), 6) if denom else None,
            "iou": round(float(tp[i] / (tp[i] + fp[i] + fn[i])), 6) if denom else None,
        }
    return out


def mean_dice(scores: dict[str, dict[str, float | None]], skip: Sequence[str] = ("background",)) -> float:
    """Mean Dice over the cell classes that are defined (background is easy and would flatter it)."""
    values = [v["dice"] for k, v in scores.items() if k not in skip and v["dice"] is not None]
    return float(np.mean(values)) if values else 0.0
