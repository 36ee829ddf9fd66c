"""Cell outlines drawn over the frame, one colour per class, so a person can check the counts."""

from __future__ import annotations

import cv2
import numpy as np

from runtime.classes import CELL_CLASSES

# BGR; chosen to stay distinguishable on a pink-violet stained smear.
CLASS_COLOURS_BGR: dict[str, tuple[int, int, int]] = {
    "rbc": (0, 200, 255),  # amber
    "wbc": (255, 80, 0),  # blue
    "platelet": (40, 220, 40),  # green
}


def draw_overlay(image_bgr: np.ndarray, mask: np.ndarray, counts: dict[str, int] | None = None,
                 thickness: int | None = None, legend: bool = True) -> np.ndarray:
    """A copy of the frame with each class's outlines in its colour and a legend with the counts
    (the given ones, e.g. a result's, else the number of outlines drawn)."""
    if mask.shape != image_bgr.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image_bgr.shape[:2]}")
    out = image_bgr.copy()
    thickness = thickness or max(1, round(max(mask.shape) / 400))
    drawn = {}
    for name, index in CELL_CLASSES.items():
        binary = (mask == index).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        drawn[name] = len(contours)
        cv2.drawContours(out, contours, -1, CLASS_COLOURS_BGR[name], thickness, lineType=cv2.LINE_AA)
    if legend:
        _draw_legend(out, counts if counts is not None else drawn)
    return out


def _draw_legend(out: np.ndarray, counts: dict[str, int]) -> None:
    scale = max(0.4, min(out.shape[:2]) / 900)
    line_h = int(22 * scale / 0.5)
    for row, (name, n) in enumerate(counts.items()):
        y = 8 + line_h * (row + 1)
        text = f"{name}: {n}"
        cv2.putText(out, text, (9, y + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, CLASS_COLOURS_BGR[name], 1, cv2.LINE_AA)
