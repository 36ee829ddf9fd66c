"""From a class mask (and optionally a red-cell centre heat-map) to what a result reports.

Counting rules, all relative to the red-cell diameter in the mask's own pixels (given, or measured
from the mask) so they hold at any magnification:
- a white cell or platelet is a connected component of its class, at least `min_area` of an
  average red cell's area (platelets also at most `platelet_max_area`);
- touching red cells merge into one component, so red cells are counted by peaks: the centre
  heat-map's local maxima when the model has a centre head, else the distance transform's
  (a distance-transform watershed); a red component with no peak but a plausible area counts one;
- every cell visible in the frame counts, also those cut by its border (as the data is labelled).
  `count_cells_field_edge` applies a counting-frame rule instead (cells touching the right or
  bottom edge are left out), for densities that tile without double counting.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from runtime.classes import BACKGROUND, CELL_CLASSES, CLASS_NAMES, NUM_CLASSES, PLATELET, RBC, WBC
from runtime.card_sections import section_from_dict
from runtime.errors import ConfigError
from runtime.preprocess import PreprocessParams, Prepared, ScaleDecision, decide_scale, preprocess, scores_to_frame


def area_percentages(mask: np.ndarray) -> dict[str, float]:
    """Share of the frame's pixels per class, in percent (sums to 100)."""
    hist = np.bincount(mask.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES].astype(np.float64)
    total = float(mask.size) or 1.0
    return {name: round(100.0 * hist[i] / total, 4) for i, name in enumerate(CLASS_NAMES)}


@dataclass(frozen=True)
class CountRules:
    """Thresholds as fractions of one red cell (diameter d, area pi d^2 / 4) in mask pixels."""

    rbc_min_area: float = 0.2
    wbc_min_area: float = 0.25
    wbc_border_min_area: float = 0.02
    """A white cell cut by the frame's border may show only a sliver: a white component touching
    the border counts from this area (chosen on the 1008 TXL-PBC train images, version-2 model:
    0.01-0.25 tried; the white-cell exact-count rate rose from 96.8 % to 97.3 % at 0.01-0.02;
    version 3: 35 images wrong against 36 without the rule)."""
    platelet_min_area: float = 0.05
    """A platelet is 2-3 µm across, a red cell about 7.5: 0.05 of a red cell's area is a disc of
    0.22 diameters (about 1.7 µm), so smaller specks (stain debris, a platelet's stray pixel) do
    not count. Chosen on the 1008 TXL-PBC train images, version-3 model: 0.015-0.08 tried, the
    platelet count error there was lowest at 0.05 (MAE 0.0942 at 0.015, 0.0893 at 0.05)."""
    platelet_max_area: float = 0.8
    centre_threshold: float = 0.5
    """Heat-map value (0-1) a centre peak must reach (chosen on 101 TXL-PBC train images: 0.3-0.6
    tried, 0.5 gave the lowest red-cell count error there)."""
    peak_spacing: float = 0.3
    """Two peaks closer than this many diameters are one cell."""
    wbc_peak_min: float = 0.45
    wbc_peak_spacing: float = 1.0
    """Two white cells touch rarely but do: a white component splits at distance-transform peaks at
    least `wbc_peak_min` diameters deep and `wbc_peak_spacing` diameters apart."""
    wbc_pair_max_solidity: float = 0.9
    wbc_pair_min_notch: float = 0.2
    """A white component the peaks left whole is two cells in contact when its outline is clearly
    not convex: area under `wbc_pair_max_solidity` of its convex hull and two notches at least
    `wbc_pair_min_notch` diameters deep; it is cut between the notches. One white cell is convex:
    over the 999 single-cell components of the 1008 TXL-PBC train images (version-3 model) the
    1st percentile of solidity was 0.979 and the 99th of the second notch 0.068 diameters."""
    dt_peak_min: float = 0.22
    """Distance-transform peaks below this many diameters are not cell centres (no centre head)."""
    default_rbc_diameter_px: float = 40.0
    """Used when the mask has no red cell to measure (then only the other classes are counted)."""


DEFAULT_RULES = CountRules()


def _on_border(stats: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per row of cv2.connectedComponentsWithStats' `stats`: does that component touch the frame's border?"""
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right, bottom = x + stats[:, cv2.CC_STAT_WIDTH], y + stats[:, cv2.CC_STAT_HEIGHT]
    h, w = shape
    return (x == 0) | (y == 0) | (right >= w) | (bottom >= h)


def rbc_diameter_from_mask(mask: np.ndarray) -> float | None:
    """Typical red-cell diameter (px) in a class mask: median equivalent diameter of the red-cell
    components that look like one whole cell (convex, away from the border), else twice the
    90th percentile of the distance-transform peaks; None without red cells."""
    binary = (mask == RBC).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return None
    on_border = _on_border(stats, mask.shape)
    singles = []
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if area < 20 or on_border[i]:
            continue
        contours, _ = cv2.findContours((labels[y:y + bh, x:x + bw] == i).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        hull = cv2.contourArea(cv2.convexHull(np.vstack(contours)))
        if hull > 0 and area / hull > 0.93 and 0.75 < bw / bh < 1.33:
            singles.append(math.sqrt(4.0 * area / math.pi))
    if len(singles) >= 3:
        return float(np.median(singles))
    dist = cv2.distanceTransform(binary, cv2.DIST_L2, 5)
    peaks = dist[(dist >= cv2.dilate(dist, np.ones((5, 5), np.uint8)) - 1e-3) & (dist >= 2)]
    return float(2.0 * np.percentile(peaks, 90)) if peaks.size else None


_MAX_CANDIDATES = 4000
"""Above this many candidate pixels _disc_maxima dilates the whole surface instead."""


def _disc_maxima(surface: np.ndarray, where: np.ndarray, k: int) -> np.ndarray:
    """Pixels of `where` not below any pixel of `surface` within a k x k elliptical window: the same
    as comparing with cv2.dilate(surface, ellipse), which takes ~100 ms on a 640x480 frame at
    k = 105 (a white cell's spacing at high magnification). A pixel only qualifies if it is a
    maximum of its 4-neighbourhood (inside every ellipse), so the window is tested for those few."""
    surface = surface.astype(np.float32, copy=False)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    candidates = where & (surface >= cv2.dilate(surface, cross) - 1e-6)
    ys, xs = np.nonzero(candidates)
    if ys.size > _MAX_CANDIDATES:
        return where & (surface >= cv2.dilate(surface, kernel) - 1e-6)
    r = k // 2
    h, w = surface.shape
    inside = kernel.astype(bool)
    peaks = np.zeros(surface.shape, bool)
    for y, x in zip(ys.tolist(), xs.tolist()):
        y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
        window = surface[y0:y1, x0:x1][inside[y0 - y + r:y1 - y + r, x0 - x + r:x1 - x + r]]
        peaks[y, x] = surface[y, x] >= window.max() - 1e-6
    return peaks


def _peak_markers(surface: np.ndarray, allowed: np.ndarray, min_value: float, spacing_px: float) -> tuple[int, np.ndarray]:
    """Local maxima of `surface` >= min_value inside `allowed`, merged within `spacing_px`:
    (count, int32 marker image with ids 1..count)."""
    k = max(3, int(round(spacing_px)) | 1)
    peaks = _disc_maxima(surface, (surface >= min_value) & allowed, k)
    # Plateaus and near-duplicates: grow each peak pixel by half the spacing and merge what touches.
    grown = cv2.dilate(peaks.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(1, k // 2) | 1,) * 2))
    n, markers = cv2.connectedComponents(grown, connectivity=8)
    markers[~peaks] = 0
    return n - 1, markers.astype(np.int32)


def label_cells(mask: np.ndarray, centres: np.ndarray | None = None, *, rbc_diameter_px: float | None = None,
                rules: CountRules = DEFAULT_RULES) -> dict[str, np.ndarray]:
    """Instance labels per class (int32, 0 = none, 1..N cells) under the counting rules.

    `centres` is the red-cell centre heat-map in [0, 1] (sigmoid of the model's 'centres' output)
    at the mask's size.
    """
    if centres is not None and centres.shape != mask.shape:
        raise ValueError(f"centres {centres.shape} and mask {mask.shape} differ in size")
    d = rbc_diameter_px or rbc_diameter_from_mask(mask) or rules.default_rbc_diameter_px
    cell_area = math.pi * d * d / 4.0
    out = {
        "wbc": _split_at_notches(_split_touching(mask == WBC, rules.wbc_peak_min * d, rules.wbc_peak_spacing * d,
                                                 rules.wbc_min_area * cell_area, rules.wbc_border_min_area * cell_area),
                                 rules.wbc_pair_max_solidity, rules.wbc_pair_min_notch * d, rules.wbc_min_area * cell_area),
        "platelet": _components(mask == PLATELET, rules.platelet_min_area * cell_area, rules.platelet_max_area * cell_area),
        "rbc": _red_cells(mask, centres, d, cell_area, rules),
    }
    return {name: out[name] for name in CELL_CLASSES}


def _components(binary: np.ndarray, min_area: float, max_area: float | None,
                border_min_area: float | None = None) -> np.ndarray:
    """Connected components within the area limits, relabelled 1..N; with `border_min_area`,
    components touching the frame's border count from that (smaller) area."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA]
    keep = np.zeros(n, bool)
    keep[1:] = areas[1:] >= min_area
    if border_min_area is not None:
        keep[1:] |= _on_border(stats[1:], binary.shape) & (areas[1:] >= border_min_area)
    if max_area is not None:
        keep[1:] &= areas[1:] <= max_area
    relabel = np.zeros(n, np.int32)
    relabel[keep] = np.arange(1, int(keep.sum()) + 1)
    return relabel[labels]


def _split_touching(binary: np.ndarray, min_peak: float, spacing: float, min_area: float,
                    border_min_area: float | None = None) -> np.ndarray:
    """Components of `binary` (>= min_area px, or >= border_min_area px on the frame's border),
    split by a distance-transform watershed."""
    comps = _components(binary, min_area, None, border_min_area)
    if comps.max() == 0:
        return comps
    keep = comps > 0
    dist = cv2.distanceTransform(keep.astype(np.uint8), cv2.DIST_L2, 5)
    _, markers = _peak_markers(dist, keep, min_peak, spacing)
    labels = _watershed(keep, markers, dist / max(float(dist.max()), 1e-6))
    next_id = max(int(labels.max()), int(markers.max())) + 1
    for i in range(1, int(comps.max()) + 1):
        region = comps == i
        if not labels[region].any():
            labels[region] = next_id
            next_id += 1
    return _compact(labels, np.zeros_like(markers))


def _split_at_notches(labels: np.ndarray, max_solidity: float, min_notch_px: float, min_part_px: float) -> np.ndarray:
    """`labels` with every region the peaks left whole (one instance, touching no other) cut in two
    along the line between its two notches, when its outline has two deep ones (and a solidity
    under `max_solidity`) and both parts hold at least `min_part_px` pixels: two round cells in
    contact, seen as one region."""
    out = labels.copy()
    next_id = int(labels.max()) + 1
    n, regions = cv2.connectedComponents((labels > 0).astype(np.uint8), connectivity=8)
    for r in range(1, n):
        inside = regions == r
        ids = np.unique(labels[inside])
        if ids.size != 1:
            continue
        region = inside.astype(np.uint8)
        notches = _two_deep_notches(region, max_solidity, min_notch_px)
        if notches is None:
            continue
        cut = region.copy()
        cv2.line(cut, notches[0], notches[1], 0, thickness=3)
        k, parts, stats, _ = cv2.connectedComponentsWithStats(cut, connectivity=4)
        if k < 3:
            continue
        first, second = np.argsort(stats[1:, cv2.CC_STAT_AREA])[::-1][:2] + 1
        if stats[second, cv2.CC_STAT_AREA] < min_part_px:
            continue
        old_id = int(ids[0])
        out[inside] = 0
        out[parts == first] = old_id
        out[parts == second] = next_id
        _grow_labels(out, inside)  # the cut line and crumbs go to the part they touch
        next_id += 1
    return _compact(out, np.zeros_like(out))


def _two_deep_notches(region: np.ndarray, max_solidity: float, min_depth_px: float) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The two deepest convexity defects of `region`'s outline (points), when the region is
    non-convex enough (solidity under `max_solidity`) and both are at least `min_depth_px` deep."""
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    contour = max(contours, key=cv2.contourArea)
    hull = cv2.convexHull(contour, returnPoints=False)
    hull_area = cv2.contourArea(contour[hull[:, 0]])
    if hull_area <= 0 or region.sum() / hull_area >= max_solidity:
        return None
    try:
        defects = cv2.convexityDefects(contour, hull)
    except cv2.error:  # a self-touching outline has no usable hull order
        return None
    if defects is None or len(defects) < 2:
        return None
    defects = defects.reshape(-1, 4)
    deepest = defects[np.argsort(defects[:, 3])[::-1][:2]]
    if deepest[1, 3] / 256.0 < min_depth_px:
        return None
    (ax, ay), (bx, by) = contour[deepest[0, 2], 0], contour[deepest[1, 2], 0]
    return (int(ax), int(ay)), (int(bx), int(by))


def _red_cells(mask: np.ndarray, centres: np.ndarray | None, d: float, cell_area: float,
               rules: CountRules) -> np.ndarray:
    red = mask == RBC
    if not red.any():
        return np.zeros(mask.shape, np.int32)
    dist = cv2.distanceTransform(red.astype(np.uint8), cv2.DIST_L2, 5)
    if centres is not None:
        # A centre may sit under a white cell that overlaps the red one: allow any cell pixel near red.
        near_red = cv2.dilate(red.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) | (mask == WBC)
        surface = cv2.GaussianBlur(centres.astype(np.float32), (0, 0), max(0.5, 0.05 * d))
        _, markers = _peak_markers(surface, near_red, rules.centre_threshold, rules.peak_spacing * d)
        landscape = surface
    else:
        _, markers = _peak_markers(dist, red, rules.dt_peak_min * d, rules.peak_spacing * d * 1.5)
        landscape = dist / max(float(dist.max()), 1e-6)
    labels = _watershed(red, markers, landscape)
    # Red components that got no peak but look like a cell (e.g. cut by the border) count once.
    n, comp, stats, _ = cv2.connectedComponentsWithStats(red.astype(np.uint8), connectivity=8)
    next_id = max(int(labels.max()), int(markers.max())) + 1
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] < rules.rbc_min_area * cell_area:
            continue
        region = comp == i
        if not labels[region].any():
            labels[region] = next_id
            next_id += 1
    # Peaks that fell on a white cell next to red keep their id even though no red pixel joined them.
    return _compact(labels, markers)


def _watershed(red: np.ndarray, markers: np.ndarray, landscape: np.ndarray) -> np.ndarray:
    if markers.max() == 0:
        return np.zeros(red.shape, np.int32)
    seeds = np.where(markers > 0, markers + 1, 0).astype(np.int32)
    seeds[~red & (markers == 0)] = 1  # everything that is not red is one "outside" basin
    # cv2.watershed floods along small intensity steps between neighbours, not by altitude: the
    # outside basin sits a full step above every cell pixel, so it cannot creep into a cell while
    # the cell's own seeds flood it (without the step, cells 100+ px across kept only a patch
    # round their seed).
    relief = np.where(red, np.clip(127.0 * (1.0 - landscape), 0, 127), 255).astype(np.uint8)
    cv2.watershed(cv2.merge([relief, relief, relief]), seeds)
    labels = np.where(seeds > 1, seeds - 1, 0).astype(np.int32)
    labels[~red] = 0
    _grow_labels(labels, red, rounds=4)  # watershed lines (-1) and the rim the outside basin reached
    return labels


def _grow_labels(labels: np.ndarray, where: np.ndarray, rounds: int | None = None) -> None:
    """In place: unlabelled pixels of `where` take a neighbouring label (the highest id of their
    3x3 neighbourhood), one ring per round, for `rounds` rounds or until no pixel is reached."""
    done = 0
    while rounds is None or done < rounds:
        unlabelled = where & (labels == 0)
        if not unlabelled.any():
            return
        grown = cv2.dilate(labels.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
        reached = unlabelled & (grown > 0)
        if not reached.any():
            return
        labels[reached] = grown[reached]
        done += 1


def _compact(labels: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """Renumber ids 1..N; a marker whose watershed region holds no red pixel still counts as a cell
    (its centre sits on an overlapping white cell), kept as its marker pixels."""
    present = set(np.unique(labels[labels > 0]).tolist())
    out = labels.copy()
    for m in np.unique(markers[markers > 0]).tolist():
        if m not in present:
            out[(markers == m) & (out == 0)] = m
    ids = np.unique(out[out > 0])
    lut = np.zeros(int(out.max()) + 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1)
    return lut[out]


def count_cells(mask: np.ndarray, centres: np.ndarray | None = None, *, rbc_diameter_px: float | None = None,
                rules: CountRules = DEFAULT_RULES) -> dict[str, int]:
    """Per-class cell counts {rbc, wbc, platelet}: every cell visible in the frame, border-cut ones too.

    `mask`: HxW class indices; `centres`: optional HxW red-cell centre heat-map in [0, 1] at the same
    size; `rbc_diameter_px`: red-cell diameter in mask pixels if known (else measured from the mask).
    """
    labels = label_cells(mask, centres, rbc_diameter_px=rbc_diameter_px, rules=rules)
    return {name: int(lab.max()) for name, lab in labels.items()}


def count_cells_field_edge(mask: np.ndarray, centres: np.ndarray | None = None, *,
                           rbc_diameter_px: float | None = None, rules: CountRules = DEFAULT_RULES) -> dict[str, int]:
    """Counts under a counting-frame rule: cells touching the right or bottom edge are left out
    (those touching the top or left edge count), so adjacent fields never count a cell twice."""
    labels = label_cells(mask, centres, rbc_diameter_px=rbc_diameter_px, rules=rules)
    counts = {}
    for name, lab in labels.items():
        touching = set(np.unique(lab[:, -1]).tolist()) | set(np.unique(lab[-1, :]).tolist())
        ids = set(np.unique(lab[lab > 0]).tolist())
        counts[name] = len(ids - touching)
    return counts


# --- model outputs -> frame-sized mask and centres, with the red-cell size measured from a first pass ---

Run = Callable[[np.ndarray], Mapping[str, np.ndarray]]
"""Runs the network on a 1xCxHxW tensor and returns its outputs by name ('logits', optional 'centres')."""


@dataclass(frozen=True)
class Segmentation:
    """One frame's prediction at the frame's own size."""

    mask: np.ndarray
    """HxW uint8 class indices."""
    centres: np.ndarray | None
    """HxW float32 red-cell centre heat-map in [0, 1], when the model has a centre head."""
    scale: ScaleDecision
    """The resampling used for the final pass (source 'measured' after a refining pass)."""
    rbc_diameter_px: float | None
    """Red-cell diameter in frame pixels as measured on the prediction (None without red cells)."""
    passes: int
    """Network runs it took."""


@dataclass(frozen=True)
class NetworkPass:
    """One network run at one scale, on the network grid."""

    prepared: Prepared
    logits: np.ndarray
    """CxHxW class scores (padded grid)."""
    heat: np.ndarray | None
    """1xHxW red-cell centre heat-map in [0, 1], when the model has a centre head."""
    measured: float | None
    """Red-cell diameter in frame pixels measured on this pass's mask."""
    confidence: float
    """Mean top-class probability inside the frame: higher when cells appear near the learnt size."""
    runs: int = 1
    """Network runs behind these outputs (3 when flip-averaged)."""

    @property
    def decision(self) -> ScaleDecision:
        return self.prepared.scale


@dataclass(frozen=True)
class InferencePlan:
    """How a model's passes are planned on a frame; stored in the model card (`inference`).

    `measured_diameter_ratio` is the red-cell diameter this model's masks show (as
    `rbc_diameter_from_mask` measures it) over the labelled diameter, with the frame at the right
    scale: each model draws cells a little larger or smaller, so the measurement is divided by it
    before it sets the scale (fitted on training frames at export, export.scale_fit).
    """

    measured_diameter_ratio: float = 1.0
    candidates: tuple[float, ...] = (1.0, 2.0)
    """Multiples of the classical guess tried first; the most confident of them is refined."""
    tolerance: float = 0.05
    """A refinement pass runs when the corrected measurement differs from the assumed diameter by more."""
    refinements: int = 2
    max_refinement_step: float = 2.0
    """A refinement moves the assumed red-cell diameter by at most this factor: the coarse choice
    has settled the order of magnitude, and a frame with few whole cells can measure fragments."""
    flip_average: bool = False
    """Average the final pass's outputs with its horizontally and vertically flipped runs."""
    wbc_border_band: float = 0.25
    wbc_border_min_prob: float = 0.15
    """Within `wbc_border_band` red-cell diameters of the frame's edge a pixel is white cell from
    this white-cell probability: a white cell cut by the border shows the network only part of
    itself (no nucleus, a sliver of cytoplasm) and its evidence is weaker there. Chosen on the
    1008 TXL-PBC train images, version-3 model: bands 0.25-0.5 and probabilities 0.1-0.3 tried,
    35 images with a wrong white-cell count without it, 31-32 from 0.15 to 0.3, 34-35 at 0.1; of
    the values within one image of the best, the val split picked 0.15."""
    platelet_grow_px: float = 0.0
    """Platelets grow into the plasma around them by this many network-grid pixels. A platelet
    is a few grid pixels across and the network, trained with an ignore band on box outlines,
    draws it a little small; fitted on training frames at export (export.scale_fit)."""

    def __post_init__(self) -> None:
        if not 0.5 <= self.measured_diameter_ratio <= 2.0:
            raise ConfigError(f"inference.measured_diameter_ratio: must be 0.5-2, got {self.measured_diameter_ratio}")
        if not self.candidates or any(c <= 0 for c in self.candidates) or self.candidates[0] != 1.0:
            raise ConfigError(f"inference.candidates: positive factors starting with 1.0, got {list(self.candidates)}")
        if self.tolerance < 0 or self.refinements < 0:
            raise ConfigError("inference.tolerance and inference.refinements must not be negative")
        if self.max_refinement_step < 1.0:
            raise ConfigError(f"inference.max_refinement_step: must be >= 1, got {self.max_refinement_step}")
        if self.wbc_border_band < 0 or not 0.0 < self.wbc_border_min_prob <= 1.0:
            raise ConfigError("inference.wbc_border_band must not be negative and wbc_border_min_prob must be in (0, 1]")
        if not 0.0 <= self.platelet_grow_px <= 4.0:
            raise ConfigError(f"inference.platelet_grow_px: must be 0-4, got {self.platelet_grow_px}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["candidates"] = list(self.candidates)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "InferencePlan":
        """From a card's `inference` section (absent: the defaults); unknown keys are an error."""
        if not data:
            return cls()
        return section_from_dict(cls, data, "inference", float_tuples=("candidates",))


DEFAULT_PLAN = InferencePlan()


def run_pass(run: Run, prepared: Prepared) -> NetworkPass:
    """Run the network on one prepared tensor and read what the scale search needs from its outputs."""
    logits, heat = _network_outputs(run, prepared.tensor)
    return _read_pass(prepared, logits, heat, runs=1)


def _network_outputs(run: Run, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(CxHxW class scores, 1xHxW centre heat-map in [0, 1] or None) of one network run."""
    outputs = run(tensor)
    logits = np.asarray(outputs["logits"] if "logits" in outputs else next(iter(outputs.values())))[0]
    centres = outputs.get("centres")
    heat = None
    if centres is not None:
        heat = 1.0 / (1.0 + np.exp(-np.asarray(centres, np.float32)[0].reshape(1, *logits.shape[1:])))
    return logits, heat


def _read_pass(prepared: Prepared, logits: np.ndarray, heat: np.ndarray | None, runs: int) -> NetworkPass:
    rh, rw = prepared.geometry.resized_hw
    inside = logits[:, :rh, :rw].astype(np.float32)
    grid_mask = inside.argmax(axis=0).astype(np.uint8)
    diameter = rbc_diameter_from_mask(grid_mask)
    measured = None if diameter is None else diameter / prepared.geometry.scale
    shifted = np.exp(inside - inside.max(axis=0, keepdims=True))
    confidence = float((1.0 / shifted.sum(axis=0)).mean())
    return NetworkPass(prepared, logits, heat, measured, confidence, runs)


def flip_averaged(run: Run, plain: NetworkPass) -> NetworkPass:
    """`plain` averaged with the network's left-right and up-down flipped runs (each flipped back):
    the mean of three views smooths the class boundaries and centre peaks the network draws."""
    logits = plain.logits.astype(np.float32).copy()
    heat = None if plain.heat is None else plain.heat.astype(np.float32).copy()
    for axis in (-1, -2):
        flipped = np.ascontiguousarray(np.flip(plain.prepared.tensor, axis=axis))
        flipped_logits, flipped_heat = _network_outputs(run, flipped)
        logits += np.flip(flipped_logits, axis=axis)
        if heat is not None and flipped_heat is not None:
            heat += np.flip(flipped_heat, axis=axis)
    return _read_pass(plain.prepared, logits / 3.0, None if heat is None else heat / 3.0, runs=plain.runs + 2)


def _at_diameter(params: PreprocessParams, diameter: float, source: str) -> ScaleDecision:
    scale = float(np.clip(params.target_rbc_diameter_px / diameter, params.min_scale, params.max_scale))
    return ScaleDecision(scale=scale, source=source, rbc_diameter_px=float(diameter))  # type: ignore[arg-type]


def search_scale(run: Run, frame: np.ndarray, params: PreprocessParams, first: NetworkPass,
                 plan: InferencePlan = DEFAULT_PLAN) -> list[NetworkPass]:
    """Every pass of the scale search, `first` (the pass at decide_scale's decision) included; the
    last one is the pass the frame's segmentation comes from.

    The classical estimate (preprocess) is only a first guess, and it errs mostly low (sub-cell
    texture looks like small cells), where the network, shown cells several times too large,
    agrees with it. So the network also runs at the plan's other `candidates` times the guess,
    and the most confident pass that found red cells settles the coarse scale. Confidence is no fine measure (it
    rises as cells grow), so the scale is then set by the red-cell size measured on that pass's
    mask (divided by the model's measured_diameter_ratio, and within `max_refinement_step` of
    the size it was run at): a pass at that size, repeated up to `refinements` times while the
    size moves by more than `tolerance`. A calibrated frame, or one
    with no estimate, runs once.
    """
    decision = first.decision
    if decision.source == "calibration" or decision.rbc_diameter_px is None:
        return [_final(run, first, plan)]
    guess = decision.rbc_diameter_px
    passes = [first if f == 1.0 else run_pass(run, preprocess(frame, params, scale=_at_diameter(params, guess * f, "estimated")))
              for f in plan.candidates]
    current = coarse_choice(passes)
    for _ in range(plan.refinements):
        if current.measured is None:
            break
        assumed = params.target_rbc_diameter_px / current.decision.scale
        step = plan.max_refinement_step
        estimate = float(np.clip(current.measured / plan.measured_diameter_ratio, assumed / step, assumed * step))
        if abs(estimate / assumed - 1.0) <= plan.tolerance:
            break
        current = run_pass(run, preprocess(frame, params, scale=_at_diameter(params, estimate, "measured")))
        passes.append(current)
    passes = [p for p in passes if p is not current]
    return passes + [_final(run, current, plan)]


def coarse_choice(passes: list[NetworkPass]) -> NetworkPass:
    """The most confident pass that found red cells. A pass at a scale where cells are too small
    to recognise is confidently all plasma: it wins only when no pass found a red cell."""
    return max(passes, key=lambda p: (p.measured is not None, p.confidence))


def _final(run: Run, chosen: NetworkPass, plan: InferencePlan) -> NetworkPass:
    return flip_averaged(run, chosen) if plan.flip_average else chosen


def white_cells_at_border(mask: np.ndarray, scores: np.ndarray, band_px: float, min_prob: float) -> np.ndarray:
    """`mask` with pixels within `band_px` of the frame's edge turned white cell where the network
    gives that class at least `min_prob` (softmax of the frame-sized `scores`, CxHxW)."""
    band = int(round(band_px))
    if band <= 0 or min_prob >= 1.0:
        return mask
    h, w = mask.shape
    near = np.zeros((h, w), bool)
    near[:band], near[-band:], near[:, :band], near[:, -band:] = True, True, True, True
    edge = scores[:, near].astype(np.float32)
    edge = np.exp(edge - edge.max(axis=0, keepdims=True))
    white = edge[WBC] / edge.sum(axis=0) >= min_prob
    out = mask.copy()
    out[near] = np.where(white, WBC, mask[near])
    return out


def grow_platelets(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """`mask` with plasma pixels within `radius_px` of a platelet pixel turned platelet."""
    platelet = mask == PLATELET
    if radius_px <= 0 or not platelet.any():
        return mask
    distance = cv2.distanceTransform((~platelet).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    grown = mask.copy()
    grown[(mask == BACKGROUND) & (distance <= radius_px)] = PLATELET
    return grown


def to_segmentation(passes: list[NetworkPass], plan: InferencePlan = DEFAULT_PLAN) -> Segmentation:
    """The scale search's final pass (the last of `passes`), mapped to the frame's own size, with
    the plan's white cells at the frame edge and platelet growth."""
    final = passes[-1]
    geometry = final.prepared.geometry
    scores = scores_to_frame(final.logits, geometry)
    mask = scores.argmax(axis=0).astype(np.uint8)
    if final.measured is not None:
        mask = white_cells_at_border(mask, scores, plan.wbc_border_band * final.measured, plan.wbc_border_min_prob)
    mask = grow_platelets(mask, plan.platelet_grow_px / geometry.scale)
    centres = scores_to_frame(final.heat, geometry)[0] if final.heat is not None else None
    return Segmentation(mask=mask, centres=centres, scale=final.decision, rbc_diameter_px=final.measured,
                        passes=sum(p.runs for p in passes))


def segment_frame(run: Run, frame: np.ndarray, params: PreprocessParams, *, um_per_px: float | None = None,
                  plan: InferencePlan = DEFAULT_PLAN) -> Segmentation:
    """Segment a frame; without a µm/px calibration, find the red-cell size with the network itself
    (first pass at decide_scale's decision, then search_scale's passes)."""
    first = run_pass(run, preprocess(frame, params, scale=decide_scale(params, frame, um_per_px=um_per_px)))
    return to_segmentation(search_scale(run, frame, params, first, plan), plan)


def count_segmentation(seg: Segmentation, rules: CountRules = DEFAULT_RULES) -> dict[str, int]:
    """count_cells with the segmentation's centre heat-map and measured red-cell size."""
    return count_cells(seg.mask, seg.centres, rbc_diameter_px=seg.rbc_diameter_px, rules=rules)


def analyse_frame(run: Run, frame: np.ndarray, params: PreprocessParams, *, um_per_px: float | None = None,
                  plan: InferencePlan = DEFAULT_PLAN, rules: CountRules = DEFAULT_RULES) -> tuple[Segmentation, dict[str, int]]:
    """segment_frame + count_cells with the measured red-cell size: what a device reports per frame."""
    seg = segment_frame(run, frame, params, um_per_px=um_per_px, plan=plan)
    return seg, count_segmentation(seg, rules)
