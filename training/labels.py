"""The labeller: cell boxes -> class masks.

Each box becomes the ellipse inscribed in it. Red cells are painted first, then platelets, then
white cells, so where boxes overlap the rarer class wins. An optional ignore ring (IGNORE_INDEX)
around every ellipse's outline keeps the loss off the pixels a box cannot place reliably.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from runtime.classes import BACKGROUND, PLATELET, RBC, WBC
from runtime.preprocess import IGNORE_INDEX
from training.txl_pbc import Box

PAINT_ORDER: tuple[int, ...] = (RBC, PLATELET, WBC)
_SHIFT = 4  # sub-pixel precision for cv2.ellipse (coordinates in 1/16 px)


def _draw_ellipse(canvas: np.ndarray, box: Box, value: int, thickness: int) -> None:
    scale = 1 << _SHIFT
    centre = (int(round(box.cx * scale - scale / 2)), int(round(box.cy * scale - scale / 2)))
    axes = (max(1, int(round(box.w * scale / 2))), max(1, int(round(box.h * scale / 2))))
    cv2.ellipse(canvas, centre, axes, 0, 0, 360, int(value), thickness, cv2.LINE_8, _SHIFT)


def boxes_to_mask(boxes: Iterable[Box], shape: tuple[int, int], ignore_ring_px: int = 0) -> np.ndarray:
    """HxW uint8 class mask of filled ellipses inscribed in `boxes`, painted RBC < platelet < WBC.

    With `ignore_ring_px` > 0 a band of that width centred on every ellipse outline is set to
    IGNORE_INDEX (the loss skips it); the evaluation masks use 0.
    """
    boxes = list(boxes)
    mask = np.full(shape, BACKGROUND, dtype=np.uint8)
    for cls in PAINT_ORDER:
        for box in boxes:
            if box.cls == cls:
                _draw_ellipse(mask, box, cls, cv2.FILLED)
    if ignore_ring_px > 0:
        ring = np.zeros(shape, dtype=np.uint8)
        for box in boxes:
            _draw_ellipse(ring, box, 1, int(ignore_ring_px))
        mask[ring > 0] = IGNORE_INDEX
    return mask


def centre_heatmap(boxes: Iterable[Box], shape: tuple[int, int], classes: tuple[int, ...] = (RBC,),
                   sigma_fraction: float = 0.15) -> np.ndarray:
    """HxW float32 target for the cell-centre head: a Gaussian peak (height 1) at each box centre.

    Sigma follows each box's size so that a peak marks one cell at any magnification; overlapping
    peaks take the maximum, keeping neighbours separable.
    """
    heat = np.zeros(shape, dtype=np.float32)
    h, w = shape
    for box in boxes:
        if box.cls not in classes:
            continue
        sigma = max(1.0, sigma_fraction * box.diameter)
        r = int(3 * sigma) + 1
        x0, x1 = max(0, int(box.cx) - r), min(w, int(box.cx) + r + 1)
        y0, y1 = max(0, int(box.cy) - r), min(h, int(box.cy) + r + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        xs = np.arange(x0, x1, dtype=np.float32) + 0.5 - box.cx
        ys = np.arange(y0, y1, dtype=np.float32) + 0.5 - box.cy
        g = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma * sigma))
        np.maximum(heat[y0:y1, x0:x1], g, out=heat[y0:y1, x0:x1])
    return heat


def boxes_from_instances(instances: np.ndarray, class_mask: np.ndarray) -> list[Box]:
    """Tight boxes around every instance of an instance-id map (0 = none); each box takes the class
    most of its pixels carry. Used to measure the labeller where the true masks are known."""
    boxes = []
    for inst in np.unique(instances):
        if inst == 0:
            continue
        ys, xs = np.nonzero(instances == inst)
        classes = class_mask[ys, xs]
        classes = classes[classes != BACKGROUND]
        if classes.size == 0:
            continue
        cls = int(np.bincount(classes).argmax())
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        boxes.append(Box(cls, (x0 + x1) / 2, (y0 + y1) / 2, float(x1 - x0), float(y1 - y0)))
    return boxes
