"""Cells as instances: one record per counted cell, from the counting stage's instance labels.

The labels come from runtime.analysis.counting.label_cells, the only place that decides what a cell
is; a class's count is the number of its instances here (`CellTable.counts`), so nothing counts
cells a second way. Every statistic is taken for all instances at once (np.bincount and sorted
reductions over the labelled pixels), never by a full-frame pass per cell, so a frame with
thousands of specks costs time in proportion to its pixels, not pixels x objects.

Labels usually lie on the network grid (the resized frame); the records are always in the frame's
own pixels: centres mapped by the resampling's scale, areas divided by its square, boxes the span
of frame pixels that runtime.inference.preprocess.mask_to_frame gives the cell, border contact the
frame's (the resized region's edge is the frame's edge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from runtime.contracts.classes import CELL_CLASSES
from runtime.inference.preprocess import Geometry, frame_extent, grid_to_frame_coords

CELL_ORDER: tuple[str, ...] = ("wbc", "platelet", "rbc")
"""Record order, and what a capped list keeps first: white cells and platelets are few and each
matters to a reviewer; red cells are many and alike."""

DEFAULT_CELL_LIMIT = 2000
"""Most cells one result carries (the schema's maxItems): about 90 kB of JSON, well under the
broker's message limit; the counts always hold every instance."""


@dataclass(frozen=True)
class Cell:
    """One counted cell; pixel values are at the frame's own size (x right, y down)."""

    cls: str
    """'rbc', 'wbc' or 'platelet'."""
    number: int
    """1..N within its class, in label order: the number drawn on the overlay."""
    centre_px: tuple[float, float]
    """Centroid (x, y) of the cell's pixels."""
    bbox_px: tuple[int, int, int, int]
    """(x, y, width, height) of the smallest box holding its pixels; for a red cell cut by one edge
    of the frame, at least as long along that edge as the visible part of a red-cell disc at its
    depth (runtime.analysis.counting.CountRules.rbc_cut_chord)."""
    area_px: int
    confidence: float
    """Mean probability the network gives the cell's class over its pixels (0-1); 1.0 when no
    probabilities were given (a mask from elsewhere)."""
    on_border: bool
    """Touches the frame's edge (cut by it, so its size is a lower bound)."""
    um_per_px: float | None = None

    @property
    def equivalent_diameter_px(self) -> float:
        """Diameter of the disc with the cell's area."""
        return math.sqrt(4.0 * self.area_px / math.pi)

    @property
    def centre_um(self) -> tuple[float, float] | None:
        if self.um_per_px is None:
            return None
        return self.centre_px[0] * self.um_per_px, self.centre_px[1] * self.um_per_px

    @property
    def area_um2(self) -> float | None:
        return None if self.um_per_px is None else self.area_px * self.um_per_px ** 2

    @property
    def equivalent_diameter_um(self) -> float | None:
        return None if self.um_per_px is None else self.equivalent_diameter_px * self.um_per_px


@dataclass(frozen=True)
class CellTable:
    """Every instance of one frame, grouped by class (each class in label order)."""

    by_class: dict[str, list[Cell]] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Cells per class: the frame's counts."""
        return {name: len(self.by_class.get(name, ())) for name in CELL_CLASSES}

    def __len__(self) -> int:
        return sum(len(cells) for cells in self.by_class.values())

    def ordered(self) -> list[Cell]:
        """White cells, then platelets, then red cells."""
        return [cell for name in CELL_ORDER for cell in self.by_class.get(name, ())]

    def limited(self, limit: int = DEFAULT_CELL_LIMIT) -> tuple[list[Cell], bool]:
        """At most `limit` cells in `ordered` order, and whether some were left out."""
        cells = self.ordered()
        return cells[:limit], len(cells) > limit


def pixel_coordinates(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, flat indices) of a 2-D boolean mask's true pixels, in raster order: the
    flat indices of the 1-D array and one division, several times cheaper than np.nonzero on 2-D."""
    flat = np.flatnonzero(mask.ravel())
    ys = flat // mask.shape[1]
    return ys, flat - ys * mask.shape[1], flat


def instance_stats(labels: np.ndarray, confidence: np.ndarray | None = None,
                   window: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Per-instance arrays (index i is label i + 1) of an int label image with ids 1..N:
    area, centroid x/y, box x0/y0/x1/y1 (inclusive), mean of `confidence` (HxW) over each.
    With a `window` (rows, columns), the labels lie on those rows and columns of a larger image
    (each instance on consecutive ones): the coordinates are that image's, and `confidence` is at
    its size (only the labelled pixels' values are read).

    The labelled pixels are read once in raster order and cut into runs (one id along one row);
    areas, coordinate sums and boxes come from the runs, which are far fewer than the pixels (the
    sums are of integers, so exact in any order); the confidence, a float sum, is taken per pixel
    in raster order."""
    n = int(labels.max()) if labels.size else 0
    if n <= 0:
        empty_f, empty_i = np.zeros(0, np.float64), np.zeros(0, np.int64)
        return {"area": empty_i, "cx": empty_f, "cy": empty_f, "x0": empty_i, "y0": empty_i,
                "x1": empty_i, "y1": empty_i, "confidence": empty_f}
    h, w = labels.shape
    flat = np.flatnonzero((labels != 0).ravel())
    ids = np.take(labels.ravel(), flat).astype(np.intp)
    step = (ids[1:] != ids[:-1]) | (flat[1:] != flat[:-1] + 1)
    # A run also ends with its row: the pixels that start a row (found by bisection, a row each).
    row_starts = np.arange(1, h, dtype=flat.dtype) * w
    at = np.searchsorted(flat, row_starts)
    inside = at < flat.size
    at = at[inside][flat[at[inside]] == row_starts[inside]]
    step[at[at > 0] - 1] = True
    breaks = np.flatnonzero(step) + 1
    first = np.concatenate(([0], breaks))
    last = np.concatenate((breaks - 1, [flat.size - 1]))
    run_ids, length = ids[first], last - first + 1
    ry = flat[first] // w
    rx0 = flat[first] - ry * w
    rx1 = rx0 + length - 1
    if window is not None:  # a run's columns are consecutive there too
        rows, cols = window
        ry, rx0, rx1 = rows[ry], cols[rx0], cols[rx1]
        h, w = int(rows[-1]) + 1, int(cols[-1]) + 1
    area = np.bincount(run_ids, weights=length, minlength=n + 1)[1:].astype(np.int64)
    safe = np.maximum(area, 1)
    cx = np.bincount(run_ids, weights=(rx0 + rx1) * length // 2, minlength=n + 1)[1:] / safe
    cy = np.bincount(run_ids, weights=ry * length, minlength=n + 1)[1:] / safe
    if confidence is None:
        conf = np.ones(n)
    else:
        if window is None:
            values = np.take(confidence.ravel(), flat)
        else:
            py = flat // labels.shape[1]
            at = window[0][py] * confidence.shape[1] + window[1][flat - py * labels.shape[1]]
            values = np.take(confidence.ravel(), at)
        conf = np.bincount(ids, weights=values, minlength=n + 1)[1:] / safe
    x0, x1 = _extent(run_ids, rx0, rx1, n, w)
    y0, y1 = _extent(run_ids, ry, ry, n, h)
    return {"area": area, "cx": cx, "cy": cy, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "confidence": conf}


def _extent(ids: np.ndarray, low: np.ndarray, high: np.ndarray, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Least `low` and greatest `high` of each label 1..n (unbuffered minimum/maximum by label)."""
    first, last = np.full(n + 1, size, np.int64), np.full(n + 1, -1, np.int64)
    np.minimum.at(first, ids, low)
    np.maximum.at(last, ids, high)
    absent = last[1:] < 0
    return np.where(absent, 0, first[1:]), np.where(absent, 0, last[1:])


def on_edge(stats: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Per instance of `instance_stats` on labels of `shape`: whether it touches the edge."""
    h, w = shape[0], shape[1]
    return (stats["x0"] == 0) | (stats["y0"] == 0) | (stats["x1"] == w - 1) | (stats["y1"] == h - 1)


def class_cells(name: str, stats: dict[str, np.ndarray], shape: tuple[int, ...], um_per_px: float | None = None,
                geometry: Geometry | None = None) -> list[Cell]:
    """The records of one class from its `instance_stats` on labels of `shape` (the mask's): with
    `geometry`, the labels are on its grid (the resized region) and the records are mapped to its
    frame."""
    s = {**_to_frame(stats, shape, geometry), "on_border": on_edge(stats, shape)}
    keep = stats["area"] > 0  # label_cells numbers 1..N without gaps; guard anyway
    if not keep.all():
        s = {key: column[keep] for key, column in s.items()}
    rows = zip(*(s[k].tolist() for k in ("area", "cx", "cy", "x0", "y0", "x1", "y1", "confidence", "on_border")))
    # Positional: the fields in Cell's order (cls, number, centre, box, area, confidence, border, µm/px),
    # a fifth cheaper than by keyword for the hundred red cells of a field.
    return [Cell(name, i + 1, (cx, cy), (x0, y0, x1 - x0 + 1, y1 - y0 + 1), area, min(1.0, max(0.0, conf)),
                 border, um_per_px)
            for i, (area, cx, cy, x0, y0, x1, y1, conf, border) in enumerate(rows)]


def block_stats(labels: np.ndarray, confidence: np.ndarray | None, step: int, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """`instance_stats` of labels on a grid of step x step blocks of a mask of `shape` (block (i, j)
    holds the mask's rows i*step.. and columns j*step..), in the mask's pixels: each block is wholly
    its cell's, so areas are block counts times step^2 (a block past the mask's last odd row or
    column counts whole), boxes the blocks' pixel spans, centres the blocks' centres."""
    stats = instance_stats(labels, confidence)
    h, w = shape[0], shape[1]
    half = (step - 1) / 2.0
    return {"area": stats["area"] * step * step, "cx": stats["cx"] * step + half, "cy": stats["cy"] * step + half,
            "x0": stats["x0"] * step, "y0": stats["y0"] * step,
            "x1": np.minimum(stats["x1"] * step + step - 1, w - 1), "y1": np.minimum(stats["y1"] * step + step - 1, h - 1),
            "confidence": stats["confidence"]}


def _to_frame(stats: dict[str, np.ndarray], shape: tuple[int, ...], geometry: Geometry | None) -> dict[str, np.ndarray]:
    """`instance_stats` of labels of `shape` on `geometry`'s grid, in frame pixels (unchanged
    without a geometry, or when the grid is the frame)."""
    if geometry is None or tuple(shape) == geometry.frame_hw:
        return stats
    if tuple(shape) != geometry.resized_hw:
        raise ValueError(f"labels {tuple(shape)} are neither the frame {geometry.frame_hw} nor its grid {geometry.resized_hw}")
    (h, w), (rh, rw) = geometry.frame_hw, geometry.resized_hw
    x0, x1 = frame_extent(stats["x0"], stats["x1"], w, rw)
    y0, y1 = frame_extent(stats["y0"], stats["y1"], h, rh)
    area = np.maximum(1, np.rint(stats["area"] * (h * w) / (rh * rw))).astype(np.int64)
    return {"area": np.where(stats["area"] > 0, area, 0),
            "cx": grid_to_frame_coords(stats["cx"], w, rw), "cy": grid_to_frame_coords(stats["cy"], h, rh),
            "x0": x0, "y0": y0, "x1": x1, "y1": y1, "confidence": stats["confidence"]}
