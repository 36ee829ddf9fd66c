"""The red-cell size a class mask shows: the measurement that sets the scale a frame is run at.

The scale search (runtime.analysis.scale_search) and the counting rules (which are relative to one
red cell) read the size the same way, from this one function.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from runtime.contracts.classes import RBC


def on_border(stats: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per row of cv2.connectedComponentsWithStats' `stats`: does that component touch the frame's border?"""
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right, bottom = x + stats[:, cv2.CC_STAT_WIDTH], y + stats[:, cv2.CC_STAT_HEIGHT]
    h, w = shape
    return (x == 0) | (y == 0) | (right >= w) | (bottom >= h)


def rbc_diameter_from_mask(mask: np.ndarray) -> float | None:
    """Typical red-cell diameter (px) in a class mask: median equivalent diameter of the red-cell
    components that look like one whole cell (convex, away from the border), else twice the
    90th percentile of the distance-transform peaks; None without red cells.

    Size, border and aspect are tested on all components at once; only the components passing them
    have their convex hull measured, from the outer contours of one findContours call."""
    binary = (mask == RBC).view(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return None
    area, bw, bh = stats[:, cv2.CC_STAT_AREA], stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    aspect = bw / np.maximum(bh, 1)
    candidate = (area >= 20) & ~on_border(stats, mask.shape) & (aspect > 0.75) & (aspect < 1.33)
    candidate[0] = False
    singles = []
    if np.count_nonzero(candidate) >= 3:
        # Outer boundaries (top level of RETR_CCOMP: also those of components inside another's hole).
        contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        for contour, (_, _, _, parent) in zip(contours, hierarchy[0]):
            x, y = contour[0, 0]
            i = labels[y, x]
            if parent < 0 and candidate[i]:
                hull = cv2.contourArea(cv2.convexHull(contour))
                if hull > 0 and area[i] / hull > 0.93:
                    singles.append(math.sqrt(4.0 * area[i] / math.pi))
    if len(singles) >= 3:
        return float(np.median(singles))
    dist = cv2.distanceTransform(binary, cv2.DIST_L2, 5)
    peaks = dist[(dist >= cv2.dilate(dist, np.ones((5, 5), np.uint8)) - 1e-3) & (dist >= 2)]
    return float(2.0 * np.percentile(peaks, 90)) if peaks.size else None
