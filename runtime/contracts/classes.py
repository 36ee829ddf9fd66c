"""Class indices of the segmentation contract, and the area share per class of a class mask.

Change the indices here only; every module that reads a mask or a model output uses them.
"""

from __future__ import annotations

import numpy as np

BACKGROUND, RBC, WBC, PLATELET = 0, 1, 2, 3
CLASS_NAMES: tuple[str, ...] = ("background", "rbc", "wbc", "platelet")
CELL_CLASSES: dict[str, int] = {"rbc": RBC, "wbc": WBC, "platelet": PLATELET}
NUM_CLASSES = len(CLASS_NAMES)


def class_pixels(mask: np.ndarray) -> np.ndarray:
    """Pixels of each class index 0..NUM_CLASSES-1 in a class mask (int64): one comparison and
    count per class, several times cheaper than np.bincount, which first widens every pixel."""
    return np.array([np.count_nonzero(mask == c) for c in range(NUM_CLASSES)], np.int64)


def area_percentages(mask: np.ndarray) -> dict[str, float]:
    """Share of the frame's pixels per class, in percent (sums to 100)."""
    hist = class_pixels(mask).astype(np.float64)
    total = float(mask.size) or 1.0
    return {name: round(100.0 * float(hist[i]) / total, 4) for i, name in enumerate(CLASS_NAMES)}


TXL_PBC_FILE_CLASSES: dict[int, int] = {0: WBC, 1: RBC, 2: PLATELET}
"""TXL-PBC label files' own class order (0 WBC, 1 RBC, 2 platelets) -> project class indices."""
