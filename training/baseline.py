"""The classical baseline: colour thresholds + distance-transform watershed, no learning.

Reported beside the network for context (what a tuned traditional method reaches on the same
images). Stained objects absorb green (Otsu on the green channel's darkness, holes filled: red cells
have pale centres); nuclei and platelets are violet and darker than the frame's red cells;
large violet blobs are white-cell nuclei, grown by part of a red-cell radius to take in their
cytoplasm; small violet blobs are platelets; the remaining stained pixels are red cells.
Counting uses runtime.analysis.counting (the same rules as for the network, without a centre head).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from runtime.contracts.classes import BACKGROUND, PLATELET, RBC, WBC
from runtime.contracts.imageio import check_frame
from runtime.inference.preprocess import estimate_rbc_diameter_px

VIOLET_MARGIN = 20
"""A pixel is violet (nucleus, platelet) when its blue-minus-red exceeds the frame's typical stained
pixel by this much (0-255), or it is far darker than the typical stained pixel."""


def _fill_holes(binary: np.ndarray) -> np.ndarray:
    h, w = binary.shape
    padded = cv2.copyMakeBorder(binary, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    flood_mask = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(padded, flood_mask, (0, 0), 255)
    return cv2.bitwise_or(binary, cv2.bitwise_not(padded[1:-1, 1:-1]))


def classical_segment(frame_bgr: np.ndarray, rbc_diameter_px: float | None = None) -> np.ndarray:
    """HxW uint8 class mask of a smear frame by thresholds alone (see the module docstring)."""
    frame = check_frame(frame_bgr)
    d = rbc_diameter_px or estimate_rbc_diameter_px(frame) or 0.12 * min(frame.shape[:2])
    cell_area = math.pi * d * d / 4
    blur = cv2.GaussianBlur(frame, (0, 0), max(0.8, d / 40))
    darkness = 255 - blur[:, :, 1]  # red cells and nuclei absorb green
    mask = np.zeros(frame.shape[:2], np.uint8)
    if int(darkness.max()) - int(darkness.min()) < 15:  # blank frame
        return mask
    _, stained = cv2.threshold(darkness, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    open_k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, int(d / 12)) | 1,) * 2)
    stained = _fill_holes(cv2.morphologyEx(stained, cv2.MORPH_OPEN, open_k))
    if not stained.any():
        return mask
    # Stain colours differ between sources, so nuclei are judged against this frame's red cells:
    # bluer than the typical stained pixel and clearly darker.
    b, g, r = (blur[:, :, i].astype(np.int16) for i in range(3))
    inside = stained > 0
    blueness = b - r - int(np.median((b - r)[inside]))
    extra_dark = int(np.median(g[inside])) - g
    violet = (((blueness > VIOLET_MARGIN) & (extra_dark > 10)) | (extra_dark > 3 * VIOLET_MARGIN)).astype(np.uint8) * 255
    violet = cv2.morphologyEx(violet, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(violet, connectivity=8)
    nuclei = np.zeros_like(violet)
    platelets = np.zeros_like(violet)
    for i in range(1, n):
        area = stats[i, cv2.CC_STAT_AREA]
        if area >= 0.2 * cell_area:
            nuclei[labels == i] = 255
        elif area >= 0.015 * cell_area:
            platelets[labels == i] = 255
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, int(0.5 * d)) | 1,) * 2)
    wbc = cv2.morphologyEx(nuclei, cv2.MORPH_CLOSE, grow)
    wbc = cv2.dilate(wbc, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, int(0.3 * d)) | 1,) * 2))
    wbc = _fill_holes(wbc) & np.where(stained > 0, 255, wbc).astype(np.uint8)
    mask[stained > 0] = RBC
    mask[platelets > 0] = PLATELET
    mask[wbc > 0] = WBC
    # Red-cell fragments too small to be a cell are background (debris, rims of cut-off cells).
    red = (mask == RBC).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(red, connectivity=8)
    small = np.zeros(n, bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] < 0.1 * cell_area
    mask[small[labels] & (red > 0)] = BACKGROUND
    return mask
