"""Object-level evaluation: cells matched to labelled boxes at IoU >= 0.5, per class.

A predicted cell is its bounding box (runtime.analysis.cells.Cell.bbox_px) and its confidence; a
labelled cell is its box. Within each class and image, predictions take truths greedily in order
of falling confidence, each the unmatched truth it overlaps most (at IoU >= the threshold), as
the PASCAL VOC and COCO detection benchmarks do. Precision, recall and F1 count every prediction;
AP@0.5 is the area under the precision-recall curve of the predictions ranked by confidence over
the whole split (all-point interpolation), so the device compares with detectors' mAP@0.5.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.analysis.cells import Cell
from runtime.contracts.classes import CELL_CLASSES
from training.txl_pbc import Box

IOU_THRESHOLD = 0.5


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` (Nx4, x0 y0 x1 y1, exclusive ends) with every box in `b` (Mx4)."""
    if a.size == 0 or b.size == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def cell_boxes(cells: Sequence[Cell]) -> np.ndarray:
    return np.array([[c.bbox_px[0], c.bbox_px[1], c.bbox_px[0] + c.bbox_px[2], c.bbox_px[1] + c.bbox_px[3]]
                     for c in cells], float).reshape(-1, 4)


def label_boxes(boxes: Sequence[Box]) -> np.ndarray:
    return np.array([[b.cx - b.w / 2, b.cy - b.h / 2, b.cx + b.w / 2, b.cy + b.h / 2] for b in boxes],
                    float).reshape(-1, 4)


def match(pred: np.ndarray, confidence: np.ndarray, truth: np.ndarray,
          threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """For each prediction (in its given order) whether it matched a truth: greedy by falling
    confidence, each prediction taking the unmatched truth of highest IoU >= `threshold`."""
    hit = np.zeros(len(pred), bool)
    if len(pred) == 0 or len(truth) == 0:
        return hit
    iou = iou_matrix(pred, truth)
    free = np.ones(len(truth), bool)
    for i in np.argsort(-confidence, kind="stable"):
        candidates = np.where(free, iou[i], -1.0)
        j = int(candidates.argmax())
        if candidates[j] >= threshold:
            hit[i], free[j] = True, False
    return hit


@dataclass
class ClassTally:
    """Matches of one class over many images."""

    confidence: list[float] = field(default_factory=list)
    hit: list[bool] = field(default_factory=list)
    truths: int = 0

    def summary(self) -> dict[str, float | int | None]:
        tp = int(np.sum(self.hit))
        preds, truths = len(self.hit), self.truths
        precision = tp / preds if preds else None
        recall = tp / truths if truths else None
        f1 = (2 * tp / (preds + truths)) if preds + truths else None
        return {"truths": truths, "predictions": preds, "matched": tp,
                "precision": _round(precision), "recall": _round(recall), "f1": _round(f1),
                "ap50": _round(average_precision(np.array(self.confidence), np.array(self.hit, bool), truths))}


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


def average_precision(confidence: np.ndarray, hit: np.ndarray, truths: int) -> float | None:
    """Area under the precision-recall curve of predictions ranked by confidence (all-point
    interpolation: precision at each recall is the best precision at that recall or beyond)."""
    if truths == 0:
        return None
    if hit.size == 0:
        return 0.0
    order = np.argsort(-confidence, kind="stable")
    tp = np.cumsum(hit[order])
    precision = tp / np.arange(1, hit.size + 1)
    recall = tp / truths
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(steps * envelope))


@dataclass
class ObjectTally:
    """Per-class tallies of a set of images."""

    classes: dict[str, ClassTally] = field(default_factory=lambda: {name: ClassTally() for name in CELL_CLASSES})

    def add(self, cells_by_class: dict[str, Sequence[Cell]], boxes: Iterable[Box]) -> dict[str, dict[str, int]]:
        """Match one image's cells with its labelled boxes; returns per class tp / predictions / truths."""
        boxes = list(boxes)
        out = {}
        for name, index in CELL_CLASSES.items():
            cells = list(cells_by_class.get(name, ()))
            truth = label_boxes([b for b in boxes if b.cls == index])
            conf = np.array([c.confidence for c in cells], float)
            hit = match(cell_boxes(cells), conf, truth)
            tally = self.classes[name]
            tally.confidence.extend(conf.tolist())
            tally.hit.extend(hit.tolist())
            tally.truths += len(truth)
            out[name] = {"tp": int(hit.sum()), "pred": len(cells), "true": len(truth)}
        return out

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        per_class = {name: t.summary() for name, t in self.classes.items()}
        aps = [s["ap50"] for s in per_class.values() if s["ap50"] is not None]
        per_class["map50"] = {"ap50": _round(float(np.mean(aps))) if aps else None}  # type: ignore[dict-item]
        return per_class
