"""From a class mask to what a result reports: per-class cell counts and area percentages."""

from __future__ import annotations

import cv2
import numpy as np

from runtime.classes import CELL_CLASSES, CLASS_NAMES, NUM_CLASSES


def area_percentages(mask: np.ndarray) -> dict[str, float]:
    """Share of the frame's pixels per class, in percent (sums to 100)."""
    hist = np.bincount(mask.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES].astype(np.float64)
    total = float(mask.size) or 1.0
    return {name: round(100.0 * hist[i] / total, 4) for i, name in enumerate(CLASS_NAMES)}


def count_components(mask: np.ndarray, class_index: int, min_area_px: int = 1) -> int:
    """Number of 8-connected components of one class with at least `min_area_px` pixels."""
    binary = (mask == class_index).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return 0
    return int(np.count_nonzero(stats[1:, cv2.CC_STAT_AREA] >= min_area_px))


def count_cells(mask: np.ndarray, min_area_px: dict[str, int] | None = None) -> dict[str, int]:
    """Per-class instance counts from connected components (every cell in the frame, border ones too)."""
    min_area_px = min_area_px or {}
    return {name: count_components(mask, idx, min_area_px.get(name, 1)) for name, idx in CELL_CLASSES.items()}
