"""Cells as instances: one record per counted cell, from the counting stage's instance labels.

The labels come from runtime.analysis.counting.label_cells, the only place that decides what a cell
is; a class's count is the number of its instances here (`CellTable.counts`), so nothing counts
cells a second way. Every statistic is taken for all instances at once (np.bincount and sorted
reductions over the labelled pixels), never by a full-frame pass per cell, so a frame with
thousands of specks costs time in proportion to its pixels, not pixels x objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from runtime.contracts.classes import CELL_CLASSES

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
    """(x, y, width, height) of the smallest box holding its pixels."""
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


def instance_stats(labels: np.ndarray, confidence: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-instance arrays (index i is label i + 1) of an int label image with ids 1..N:
    area, centroid x/y, box x0/y0/x1/y1 (inclusive), mean of `confidence` (HxW) over each."""
    n = int(labels.max()) if labels.size else 0
    if n <= 0:
        empty_f, empty_i = np.zeros(0, np.float64), np.zeros(0, np.int64)
        return {"area": empty_i, "cx": empty_f, "cy": empty_f, "x0": empty_i, "y0": empty_i,
                "x1": empty_i, "y1": empty_i, "confidence": empty_f}
    flat = labels.ravel()
    where = np.flatnonzero(flat > 0)
    ids = flat[where].astype(np.int64)
    ys, xs = np.divmod(where, labels.shape[1])
    area = np.bincount(ids, minlength=n + 1)[1:]
    safe = np.maximum(area, 1)
    cx = np.bincount(ids, weights=xs, minlength=n + 1)[1:] / safe
    cy = np.bincount(ids, weights=ys, minlength=n + 1)[1:] / safe
    if confidence is None:
        conf = np.ones(n)
    else:
        conf = np.bincount(ids, weights=confidence.ravel()[where].astype(np.float64), minlength=n + 1)[1:] / safe
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    present = sorted_ids[starts] - 1
    box = {}
    for key, values, reduce in (("x0", xs, np.minimum), ("y0", ys, np.minimum),
                                ("x1", xs, np.maximum), ("y1", ys, np.maximum)):
        column = np.zeros(n, np.int64)
        column[present] = reduce.reduceat(values[order], starts)
        box[key] = column
    return {"area": area, "cx": cx, "cy": cy, **box, "confidence": conf}


def cells_from_labels(labels: dict[str, np.ndarray], confidence: np.ndarray | None = None,
                      um_per_px: float | None = None) -> CellTable:
    """The instance records of label_cells' output; `confidence` is the frame-sized probability
    of each pixel's own class (Segmentation.class_prob)."""
    by_class: dict[str, list[Cell]] = {}
    for name in CELL_CLASSES:
        lab = labels[name]
        h, w = lab.shape
        s = {key: column.tolist() for key, column in instance_stats(lab, confidence).items()}
        cells = []
        for area, cx, cy, x0, y0, x1, y1, conf in zip(s["area"], s["cx"], s["cy"], s["x0"], s["y0"], s["x1"],
                                                      s["y1"], s["confidence"]):
            if area == 0:  # label_cells numbers 1..N without gaps; guard anyway
                continue
            cells.append(Cell(cls=name, number=len(cells) + 1, centre_px=(cx, cy),
                              bbox_px=(x0, y0, x1 - x0 + 1, y1 - y0 + 1), area_px=area,
                              confidence=min(1.0, max(0.0, conf)),
                              on_border=x0 == 0 or y0 == 0 or x1 == w - 1 or y1 == h - 1, um_per_px=um_per_px))
        by_class[name] = cells
    return CellTable(by_class)
