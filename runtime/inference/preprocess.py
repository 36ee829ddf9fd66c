"""The one preprocessing: camera frame -> model tensor, and predicted mask -> frame.

Training, quantization calibration, validation and the device all call this module, so the
int8 model is calibrated on exactly what it will see. Its parameters travel in the model card
(`PreprocessParams.to_dict`) and the runtime rebuilds them from there (`from_dict`).

Steps, in order:
1. scale normalisation: resample so a red cell is `target_rbc_diameter_px` across, using a
   µm/px calibration, a measured red-cell diameter, or an estimate from the frame itself;
2. padding (reflected) on the bottom/right to a multiple of the network stride;
3. colour order (OpenCV frames are BGR);
4. intensity normalisation (fixed mean/std, or per-image standardisation);
5. layout NCHW float32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from runtime.contracts.card_sections import PreprocessParams
from runtime.contracts.errors import ConfigError, ImageError
from runtime.contracts.imageio import check_frame
from runtime.contracts.plausible import check_calibration

IGNORE_INDEX = 255
"""Mask value for pixels the loss must not see (padding, uncertain label boundaries)."""

ScaleSource = Literal["calibration", "measured", "estimated", "default"]


@dataclass(frozen=True)
class ScaleDecision:
    """How much a frame is resampled and why (reported in results for traceability)."""

    scale: float
    source: ScaleSource
    rbc_diameter_px: float | None = None


@dataclass(frozen=True)
class Geometry:
    """Where a frame's pixels sit inside the network input; needed to map masks back."""

    frame_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    padded_hw: tuple[int, int]
    scale: float


@dataclass(frozen=True)
class Prepared:
    """A model-ready tensor (1xCxHxW float32) and the geometry to undo it."""

    tensor: np.ndarray
    geometry: Geometry
    scale: ScaleDecision = field(compare=False)


ESTIMATE_CALIBRATION = 1.035
"""Box diameter / distance-transform diameter, fitted on the TXL-PBC train split (median ratio):
the inscribed disc of a cell's stained area is a little smaller than the box a person draws."""


def estimate_rbc_diameter_px(frame_bgr: np.ndarray) -> float | None:
    """Estimate the typical red-cell diameter (px) of a smear frame, or None if no cells are seen.

    Red cells absorb green light most, so the stained area is Otsu on the green channel's darkness
    (holes filled: red cells have pale centres). Each cell, touching or not, holds one local maximum
    of the distance transform at about its radius; smaller maxima come from cell edges, overlaps
    and platelets, so the 90th percentile of the maxima is the radius of a typical whole cell.
    Measured against the box-derived sizes of the TXL-PBC train split (docs/segmentation.md), this
    is a first guess; runtime.analysis.counting.segment_frame refines it from a model's first pass.
    """
    frame = check_frame(frame_bgr)
    work_scale = min(1.0, 256.0 / max(frame.shape[:2]))
    if work_scale < 1.0:
        frame = cv2.resize(frame, None, fx=work_scale, fy=work_scale, interpolation=cv2.INTER_AREA)
    cells = _stain_mask(frame)
    if cells is None:
        return None
    dist = cv2.distanceTransform(cells, cv2.DIST_L2, 5)
    local_max = dist >= cv2.dilate(dist, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))) - 1e-3
    radii = dist[local_max & (dist >= 3)]
    if radii.size == 0:
        return None
    diameter = (2.0 * float(np.percentile(radii, 90)) + 1.0) * ESTIMATE_CALIBRATION
    return diameter / work_scale


def _stain_mask(frame_bgr: np.ndarray) -> np.ndarray | None:
    """Red-cell-stained area (green darkness); None when blank or nearly all one class."""
    return _filled_otsu(255 - frame_bgr[:, :, 1], min_coverage=0.01, max_coverage=0.97)


def foreground_mask(frame_bgr: np.ndarray) -> np.ndarray | None:
    """Stained objects of any kind (saturation); None for a blank frame. Used by the quality gate."""
    saturation = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2HSV)[:, :, 1]
    return _filled_otsu(saturation, min_coverage=0.005, max_coverage=0.95)


def _filled_otsu(channel: np.ndarray, *, min_coverage: float, max_coverage: float) -> np.ndarray | None:
    """Binary uint8 mask of the bright side of `channel` (Otsu), specks opened away, holes filled.

    None when the channel has no contrast or the mask covers less than `min_coverage` or more than
    `max_coverage` of the frame (a blank field, or one where Otsu split the background itself).
    """
    channel = cv2.GaussianBlur(channel, (5, 5), 0)
    if int(channel.max()) - int(channel.min()) < 20:
        return None
    _, mask = cv2.threshold(channel, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # Fill holes (red cells have pale centres): flood the background from the border; what is not
    # reached is inside a cell. floodFill needs a mask 2 px larger than the padded image.
    h, w = mask.shape
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    cv2.floodFill(padded, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 255)
    filled = cv2.bitwise_or(mask, cv2.bitwise_not(padded[1:-1, 1:-1]))
    coverage = filled.mean() / 255.0
    if coverage < min_coverage or coverage > max_coverage:
        return None
    return filled


def decide_scale(
    params: PreprocessParams,
    frame_bgr: np.ndarray | None = None,
    *,
    um_per_px: float | None = None,
    rbc_diameter_px: float | None = None,
) -> ScaleDecision:
    """Choose the resampling factor: calibration beats a measured size beats an estimate."""
    if um_per_px is not None:
        um_per_px = check_calibration(um_per_px, params)  # a clipped scale would be a silently wrong one
        diameter = params.nominal_rbc_diameter_um / um_per_px
        source: ScaleSource = "calibration"
    elif rbc_diameter_px is not None:
        if not rbc_diameter_px > 0:
            raise ConfigError(f"rbc_diameter_px must be positive, got {rbc_diameter_px}")
        diameter, source = rbc_diameter_px, "measured"
    else:
        estimate = estimate_rbc_diameter_px(frame_bgr) if frame_bgr is not None else None
        if estimate is None:
            return ScaleDecision(scale=1.0, source="default", rbc_diameter_px=None)
        diameter, source = estimate, "estimated"
    scale = float(np.clip(params.target_rbc_diameter_px / diameter, params.min_scale, params.max_scale))
    return ScaleDecision(scale=scale, source=source, rbc_diameter_px=float(diameter))


def plan_geometry(frame_hw: tuple[int, int], scale: float, stride: int) -> Geometry:
    """Sizes after resampling by `scale` and padding up to a multiple of `stride`."""
    h, w = frame_hw
    rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
    ph, pw = -(-rh // stride) * stride, -(-rw // stride) * stride
    return Geometry(frame_hw=(h, w), resized_hw=(rh, rw), padded_hw=(ph, pw), scale=scale)


def resample_frame(frame_bgr: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Resize a uint8 frame to the geometry and reflect-pad it (still uint8, HxWx3, BGR)."""
    rh, rw = geometry.resized_hw
    if (rh, rw) != tuple(frame_bgr.shape[:2]):
        interp = cv2.INTER_AREA if geometry.scale < 1.0 else cv2.INTER_LINEAR
        frame_bgr = cv2.resize(frame_bgr, (rw, rh), interpolation=interp)
    ph, pw = geometry.padded_hw
    if (ph, pw) != (rh, rw):
        frame_bgr = cv2.copyMakeBorder(frame_bgr, 0, ph - rh, 0, pw - rw, cv2.BORDER_REFLECT_101)
    return frame_bgr


def normalize(image_bgr: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """uint8 HxWx3 BGR -> float32 CxHxW in the model's colour order and intensity scale."""
    image = image_bgr[:, :, ::-1] if params.color_order == "RGB" else image_bgr
    x = image.astype(np.float32) * (1.0 / 255.0)
    if params.intensity == "per_image":
        mean = x.reshape(-1, 3).mean(axis=0)
        std = np.maximum(x.reshape(-1, 3).std(axis=0), 0.02)
    else:
        mean = np.asarray(params.mean, dtype=np.float32)
        std = np.asarray(params.std, dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def preprocess(
    frame_bgr: np.ndarray,
    params: PreprocessParams,
    *,
    um_per_px: float | None = None,
    rbc_diameter_px: float | None = None,
    scale: ScaleDecision | None = None,
    source: str = "frame",
) -> Prepared:
    """Camera frame (HxWx3 uint8 BGR) -> Prepared (1xCxHxW float32 + geometry)."""
    frame = check_frame(frame_bgr, source=source)
    if min(frame.shape[:2]) < params.stride:
        raise ImageError(
            f"{source}: image is {frame.shape[1]}x{frame.shape[0]} px, smaller than the network stride "
            f"({params.stride} px)"
        )
    if scale is None:
        scale = decide_scale(params, frame, um_per_px=um_per_px, rbc_diameter_px=rbc_diameter_px)
    geometry = plan_geometry(frame.shape[:2], scale.scale, params.stride)
    tensor = normalize(resample_frame(frame, geometry), params)[None]
    return Prepared(tensor=tensor, geometry=geometry, scale=scale)


def mask_to_network(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Resample a frame-sized class mask to the network grid (nearest), padding with IGNORE_INDEX."""
    rh, rw = geometry.resized_hw
    out = mask
    if (rh, rw) != tuple(mask.shape[:2]):
        out = cv2.resize(mask, (rw, rh), interpolation=cv2.INTER_NEAREST)
    ph, pw = geometry.padded_hw
    if (ph, pw) != (rh, rw):
        out = cv2.copyMakeBorder(out, 0, ph - rh, 0, pw - rw, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
    return out


def scores_to_frame(scores: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Per-class scores (CxHxW on the network grid) -> CxHxW at the frame's size (bilinear).

    Resampling scores, then taking the argmax, keeps thin structures that resampling a hard mask
    with nearest-neighbour would break. The device's analysis stays on the grid (cells are mapped
    to frame coordinates instead); export's scale fit measures frame-size masks with this.
    """
    rh, rw = geometry.resized_hw
    h, w = geometry.frame_hw
    cropped = scores[:, :rh, :rw]
    if (rh, rw) == (h, w):
        return np.ascontiguousarray(cropped)
    hwc = np.ascontiguousarray(cropped.transpose(1, 2, 0))
    resized = cv2.resize(hwc, (w, h), interpolation=cv2.INTER_LINEAR)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    return np.ascontiguousarray(resized.transpose(2, 0, 1))


@functools.lru_cache(maxsize=64)
def frame_index(n_frame: int, n_grid: int) -> np.ndarray:
    """For each frame row (or column), the grid row (column) whose pixel holds its centre: frame
    pixel X sits at grid position (X + 0.5) * n_grid / n_frame, as the resampling placed it.

    The one map between the two grids: mask_to_frame upsamples with it, and a cell's frame box
    (`frame_extent`) is the span it gives, so a cell's box always bounds its upsampled pixels.
    Kept per size pair (a device sees a few), read-only."""
    index = np.minimum((2 * np.arange(n_frame, dtype=np.int64) + 1) * n_grid // (2 * n_frame), n_grid - 1)
    index.flags.writeable = False
    return index


def frame_extent(first: np.ndarray, last: np.ndarray, n_frame: int, n_grid: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last frame row (or column) that `frame_index` takes from grid rows `first`..`last`
    (inclusive); a span no frame pixel samples (a grid finer than the frame) keeps its first pixel."""
    index = frame_index(n_frame, n_grid)
    lo = np.searchsorted(index, first, "left")
    hi = np.searchsorted(index, last, "right") - 1
    lo = np.minimum(lo, n_frame - 1)
    return lo, np.maximum(hi, lo)


def grid_to_frame_coords(coord: np.ndarray, n_frame: int, n_grid: int) -> np.ndarray:
    """Grid pixel coordinates (pixel centres at integers) -> the frame's, along one axis."""
    return (np.asarray(coord, np.float64) + 0.5) * (n_frame / n_grid) - 0.5


def mask_to_frame(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A class mask or label image on the network grid (padded, or already cropped to the resized
    region) -> the frame's own size, nearest (by `frame_index`), any dtype."""
    rh, rw = geometry.resized_hw
    h, w = geometry.frame_hw
    cropped = mask[:rh, :rw]
    if (rh, rw) == (h, w):
        return np.ascontiguousarray(cropped)
    return np.take(np.take(cropped, frame_index(h, rh), axis=0), frame_index(w, rw), axis=1)
