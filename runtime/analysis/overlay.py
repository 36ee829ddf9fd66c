"""Cell outlines drawn over the frame, one colour per class, so a person can check the counts."""

from __future__ import annotations

import cv2
import numpy as np

from runtime.contracts.classes import CELL_CLASSES

# BGR; chosen to stay distinguishable on a pink-violet stained smear.
CLASS_COLOURS_BGR: dict[str, tuple[int, int, int]] = {
    "rbc": (0, 200, 255),  # amber
    "wbc": (255, 150, 40),  # light blue
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
    """Counts in each class's colour on a darkened box, readable over any smear."""
    scale = max(0.45, min(out.shape[:2]) / 900)
    line_h = int(round(24 * scale / 0.5))
    texts = [f"{name}: {n}" for name, n in counts.items()]
    width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for t in texts) + 16
    height = line_h * len(texts) + 12
    box = out[4:4 + height, 4:4 + width]
    box[:] = (box.astype(np.float32) * 0.35).astype(np.uint8)
    for row, (name, text) in enumerate(zip(counts, texts)):
        y = 4 + line_h * (row + 1)
        cv2.putText(out, text, (12, y), cv2.FONT_HERSHEY_SIMPLEX, scale, CLASS_COLOURS_BGR[name], 1, cv2.LINE_AA)
