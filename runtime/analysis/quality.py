"""The quality gate: is this frame worth analysing? Focus, exposure and cell coverage, with reasons.

A rejected frame is never an error: it becomes a result with `quality.accepted = false`, empty
counts and the reasons, so the operator learns to refocus or move the slide, and the server sees
that a capture happened.

Focus is the variance of the Laplacian of the grey frame, measured at the model's working scale
(red cells about `target_rbc_diameter_px` across) but never upsampled, since upsampling would
itself blur the frame. Cell coverage is the share of the frame covered by stained objects, from
the same stain-contrast mask the preprocessing uses to measure red cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from runtime.contracts.config import QualityConfig
from runtime.contracts.imageio import check_frame
from runtime.inference.preprocess import foreground_mask

#: White cells never cover more than this share of a smear field: the largest white-cell share among
#: the TXL-PBC training labels is 48 % of the image by bounding boxes (about 37 % by cell area).
MAX_WBC_AREA_PCT = 60.0
#: A smear field always shows red cells: on every one of the 1,008 TXL-PBC training images red-cell
#: boxes cover at least 26.8 % of the image (at least 4 red cells). A segmentation with white cells
#: or platelets but red cells on under this share is no smear field (e.g. random noise, which one
#: network reads as scattered white cells on background).
MIN_RBC_AREA_PCT = 1.0
_WORK_SIDE = 1024  # measure on at most this many pixels along the long side (cost, not accuracy)


@dataclass(frozen=True)
class QualityReport:
    """Measurements of one frame and the verdict; `reasons` is empty when accepted."""

    accepted: bool
    focus: float
    brightness: float
    clipped_fraction: float
    cell_coverage: float
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The `quality` object of a result/1 message (without the scale, added by the result)."""
        return {
            "accepted": self.accepted,
            "reasons": list(self.reasons),
            "focus": round(self.focus, 2),
            "exposure": round(self.brightness, 2),
            "clipped_fraction": round(self.clipped_fraction, 4),
            "cell_coverage": round(self.cell_coverage, 4),
        }


def focus_measure(grey: np.ndarray) -> float:
    """Variance of the Laplacian: high for sharp edges, low for a blurred or empty frame."""
    return float(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F, ksize=3).var())


def clipped_fraction(frame_bgr: np.ndarray) -> float:
    """Share of pixels blown out (all channels >= 250) or black (all channels <= 5)."""
    bright = (frame_bgr >= 250).all(axis=2)
    dark = (frame_bgr <= 5).all(axis=2)
    return float(np.count_nonzero(bright | dark)) / float(bright.size)


def cell_coverage(frame_bgr: np.ndarray) -> float:
    """Share of the frame covered by stained objects (0 for a blank or featureless frame)."""
    mask = foreground_mask(frame_bgr)
    return 0.0 if mask is None else float(np.count_nonzero(mask)) / float(mask.size)


def assess(frame_bgr: np.ndarray, config: QualityConfig, scale: float = 1.0) -> QualityReport:
    """Measure a frame and decide; `scale` is the preprocessing's resampling factor for this frame."""
    frame = check_frame(frame_bgr)
    shrink = min(1.0, scale, _WORK_SIDE / max(frame.shape[:2]))
    if shrink < 1.0:
        frame = cv2.resize(frame, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    focus = focus_measure(grey)
    brightness = float(grey.mean())
    clipped = clipped_fraction(frame)
    coverage = cell_coverage(frame)
    reasons: list[str] = []
    if config.enabled:
        if brightness > config.max_brightness or (clipped > config.max_clipped_fraction and brightness > 128):
            reasons.append(
                f"overexposed: mean brightness {brightness:.0f}/255, {100 * clipped:.0f}% of pixels blown out"
            )
        elif brightness < config.min_brightness or clipped > config.max_clipped_fraction:
            reasons.append(f"underexposed: mean brightness {brightness:.0f}/255, {100 * clipped:.0f}% of pixels black")
        if coverage < config.min_cell_coverage:
            reasons.append(
                f"no cells: stained objects cover {100 * coverage:.1f}% of the frame "
                f"(minimum {100 * config.min_cell_coverage:.1f}%)"
            )
        elif focus < config.min_focus:
            reasons.append(f"out of focus: focus measure {focus:.1f} < {config.min_focus:g}")
    return QualityReport(
        accepted=not reasons,
        focus=focus,
        brightness=brightness,
        clipped_fraction=clipped,
        cell_coverage=coverage,
        reasons=tuple(reasons),
    )


def implausible_segmentation(area_pct: dict[str, float]) -> list[str]:
    """Reasons a segmentation cannot be a blood smear (noise, a non-smear image): checked after the
    network, since such a frame can pass focus, exposure and coverage."""
    reasons = []
    wbc = float(area_pct.get("wbc", 0.0))
    rbc, others = float(area_pct.get("rbc", 0.0)), wbc + float(area_pct.get("platelet", 0.0))
    if wbc > MAX_WBC_AREA_PCT:
        reasons.append(f"implausible segmentation: white cells cover {wbc:.0f}% of the field (a smear field: "
                       f"at most {MAX_WBC_AREA_PCT:.0f}%); noise, not a smear, or the wrong magnification")
    elif rbc < MIN_RBC_AREA_PCT and others > 0:
        reasons.append(f"implausible segmentation: red cells cover {rbc:.1f}% of the field beside other cells "
                       f"(a smear field: at least {MIN_RBC_AREA_PCT:.0f}%); noise or not a smear")
    return reasons
