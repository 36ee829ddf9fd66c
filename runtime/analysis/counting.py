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
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from runtime.analysis.cells import Cell, CellTable, block_stats, class_cells, instance_stats, on_edge, pixel_coordinates
from runtime.contracts.classes import BACKGROUND, CELL_CLASSES, PLATELET, RBC, WBC
from runtime.inference.cell_size import on_border, rbc_diameter_from_mask
from runtime.inference.preprocess import Geometry, mask_to_frame


@dataclass(frozen=True)
class CountRules:
    """Thresholds as fractions of one red cell (diameter d, area pi d^2 / 4) in mask pixels."""

    rbc_min_area: float = 0.2
    """A red component no centre peak reached counts once from this share of a cell's area. Rechecked
    on the 1008 train images (int8 version 3, centre threshold 0.55): 0.2-2.0 tried, the same
    red-cell MAPE within 0.03 points apart from the one frame whose scale search failed (where
    larger values drop its phantom fragments); kept."""
    wbc_min_area: float = 0.25
    wbc_border_min_area: float = 0.1
    """A white cell cut by the frame's border may show only a sliver: a white component touching
    the border counts from this area (chosen on the 1008 TXL-PBC train images, version-2 model:
    0.01-0.25 tried; the white-cell exact-count rate rose from 96.8 % to 97.3 % at 0.01-0.02;
    version 3: 35 images wrong against 36 without the rule). Chosen again for the shipped lite
    model (version 8, stored passes): 29 images wrong at 0.02, 27 from 0.1 to 0.2, 28 from 0.25;
    0.1 taken (RULE_SELECTION in training/rule_search.py)."""
    platelet_min_area: float = 0.03
    """A platelet is 2-3 µm across, a red cell about 7.5: 0.03 of a red cell's area is a disc of
    0.17 diameters (about 1.3 µm), so smaller specks (stain debris, a platelet's stray pixel) do
    not count. Chosen on the 1008 TXL-PBC train images for the shipped lite model (version 8,
    stored passes): platelet MAE 0.0347 / 0.0317 / 0.0367 / 0.0407 at 0.02 / 0.03 / 0.04 / 0.05;
    version 3 had chosen 0.05 for itself (MAE 0.0942 at 0.015, 0.0893 at 0.05)."""
    platelet_max_area: float = 0.8
    platelet_peak_min: float = 0.1
    platelet_peak_spacing: float = 0.3
    """Touching platelets: a platelet component splits at distance-transform peaks at least
    `platelet_peak_min` diameters deep and `platelet_peak_spacing` apart (each part then within the
    area limits). Chosen on the 1008 TXL-PBC train images, int8 version-3 model: without the split
    the platelet MAE there is 0.0893 (81 images wrong); depths 0.06-0.14 and spacings 0.2-0.4
    tried, 0.0804 (74 wrong) for every depth 0.1-0.14 with spacing 0.25-0.35; the middle taken."""
    centre_threshold: float = 0.55
    """Heat-map value (0-1) a centre peak must reach. The rules serve every model, so this is the
    shipped (version-3) model's choice; the version-4 lite model would take 0.6 (1008 train images,
    counting on the network grid: red-cell MAPE 6.62 / 6.29 / 5.92 / 6.09 / 6.92 % and object F1
    0.936 / 0.938 / 0.940 / 0.940 / 0.935 at 0.5 / 0.55 / 0.6 / 0.65 / 0.7). Chosen on the 1008
    TXL-PBC train images, int8 version-3 model: 0.4-0.7 tried; red-cell MAPE 7.89 % at 0.4, 7.67 % at 0.5, 7.37 % at 0.55,
    7.39 % at 0.6, 8.89 % at 0.7 (5.87 % at 0.55 and 6.17 % at 0.5 without the one train frame whose
    scale search failed, which reports 178 red cells for 11)."""
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
    rbc_grid_step: int = 2
    """With a centre heat-map, red cells are found on blocks of this many mask pixels each way (a
    block red where at least half of it is, its centre value the mean: the lite network's own
    resolution before its final 2x upsampling) and their records taken there, mapped to the mask's
    pixels; 1 finds them on the mask itself. Red cells are most of a field's pixels, so this
    quarters the work of their peaks, flood and records; their labels at the mask's size are made
    only for overlays (FoundCells.labels). Chosen on the 1008 TXL-PBC train images (stored final
    passes, every other rule as shipped), step 1 / 2: int8 lite version 7 red-cell MAPE 4.66 / 4.75 %,
    object F1 0.9475 / 0.9484, AP@0.5 0.947 / 0.947; int8 version 3 MAPE 7.53 / 7.40 %, F1 0.9334 /
    0.9338, AP@0.5 0.941 / 0.939; white cells and platelets unchanged."""
    rbc_cut_chord: float = 1.0
    """A red cell cut by one edge of the frame (not a corner): its box reaches along that edge at
    least the chord that a disc of this many red-cell diameters shows at the cell's visible depth
    (the depth s across the edge, the chord 2 sqrt(s (D - s)), D itself from s = D / 2 on); 0 keeps
    the span of its pixels. A cut cell's thin ends fall below the network grid's resolution, so its
    pixels stop short of them, while a labelled box spans all that is visible. Only boxes change,
    never counts, areas or centres. Chosen on the 1008 TXL-PBC train images (stored final passes,
    every other rule as shipped), 0 / 0.8 / 0.9 / 1.0 / 1.1 / 1.2: see RULE_SELECTION in
    training/rule_search.py for the object F1 of each; 1.0, the disc of the measured diameter, is
    the best for both the lite and the version-3 model."""
    dt_peak_min: float = 0.22
    """Distance-transform peaks below this many diameters are not cell centres (no centre head)."""
    default_rbc_diameter_px: float = 40.0
    """Used when the mask has no red cell to measure (then only the other classes are counted)."""


DEFAULT_RULES = CountRules()


_GATHER = 1 << 22
"""Most window values _disc_maxima reads at once (16 MiB of float32)."""

_K3 = np.ones((3, 3), np.uint8)


def _disc_maxima(surface: np.ndarray, where: np.ndarray, k: int) -> np.ndarray:
    """Pixels of `where` not below any pixel of `surface` within a k x k elliptical window: the same
    as comparing with cv2.dilate(surface, ellipse), whose cost grows with k^2 per pixel (k = 105
    for a white cell's spacing at high magnification). A pixel only qualifies if it is a maximum
    of its 4-neighbourhood (inside every ellipse), so only `where`'s pixels are read, first their
    4-neighbourhoods, then the windows of those that pass: all at once, as offsets into the
    surface padded with -inf."""
    surface = surface.astype(np.float32, copy=False)
    peaks = np.zeros(surface.shape, bool)
    ys, xs, _ = pixel_coordinates(where)
    if ys.size == 0:
        return peaks
    r = k // 2
    padded = cv2.copyMakeBorder(surface, r, r, r, r, cv2.BORDER_CONSTANT, value=float("-inf"))
    flat, pw = padded.ravel(), padded.shape[1]
    starts = ys * pw + xs  # a pixel's window starts at its own position in `padded`
    centre = starts + (r * pw + r)
    values = flat[centre]
    cross = np.maximum.reduce([values, flat[centre - 1], flat[centre + 1], flat[centre - pw], flat[centre + pw]])
    candidate = values >= cross - 1e-6
    ys, xs, starts, values = ys[candidate], xs[candidate], starts[candidate], values[candidate]
    offsets = _ellipse_offsets(k, pw)  # window pixels relative to its top-left corner
    keep = np.empty(ys.size, bool)
    step = max(1, _GATHER // offsets.size)
    for i in range(0, ys.size, step):  # chunks of candidates, bounded memory
        window = flat[starts[i:i + step, None] + offsets[None, :]].max(axis=1)
        keep[i:i + step] = values[i:i + step] >= window - 1e-6
    peaks[ys[keep], xs[keep]] = True
    return peaks


@functools.lru_cache(maxsize=64)
def _ellipse(k: int) -> np.ndarray:
    """OpenCV's k x k elliptical structuring element (uint8), made once per size: a frame asks
    for the same few sizes every time."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    kernel.flags.writeable = False
    return kernel


@functools.lru_cache(maxsize=64)
def _ellipse_offsets(k: int, row_pixels: int) -> np.ndarray:
    """Flat offsets of `_ellipse(k)`'s pixels from its top-left corner in an image `row_pixels`
    wide (read-only, shared between calls)."""
    dy, dx = np.nonzero(_ellipse(k))
    offsets = dy * row_pixels + dx
    offsets.flags.writeable = False
    return offsets


def _window_reach(spacing_px: float) -> int:
    """How far (px) `_peak_markers` reads across the background for peaks `spacing_px` apart: its
    window's radius, and one pixel more."""
    return _window_size(spacing_px) // 2 + 1


def _window_size(spacing_px: float) -> int:
    """Side of `_peak_markers`' window (odd, at least 3)."""
    return max(3, int(round(spacing_px)) | 1)


def _peak_markers(surface: np.ndarray, allowed: np.ndarray, min_value: float, spacing_px: float) -> tuple[int, np.ndarray]:
    """Local maxima of `surface` >= min_value inside `allowed`, merged within `spacing_px`:
    (count, int32 marker image with ids 1..count)."""
    k = _window_size(spacing_px)
    peaks = _disc_maxima(surface, (surface >= min_value) & allowed, k)
    # Plateaus and near-duplicates: grow each peak pixel by half the spacing and merge what touches.
    grown = _dilated(peaks, _ellipse(max(1, k // 2) | 1))
    n, markers = cv2.connectedComponents(grown, connectivity=8, ltype=cv2.CV_32S)
    markers *= peaks
    return n - 1, markers


_STAMPED_MAX = 64
"""Most pixels `_dilated` stamps the kernel at one by one (beyond them, one cv2.dilate)."""


def _dilated(binary: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.dilate of a bool image by a symmetric odd-sized kernel, as uint8 0/1. A few set pixels
    (peaks, typically) get the kernel stamped round each, which costs their windows instead of
    the image times the kernel's size."""
    ys, xs, _ = pixel_coordinates(binary)
    if ys.size > _STAMPED_MAX:
        return cv2.dilate(binary.view(np.uint8), kernel)
    out = np.zeros(binary.shape, np.uint8)
    r = kernel.shape[0] // 2
    for y, x in zip(ys.tolist(), xs.tolist()):
        y0, x0 = max(0, y - r), max(0, x - r)
        window = out[y0:y + r + 1, x0:x + r + 1]  # the kernel's part inside the image
        ky, kx = y0 - (y - r), x0 - (x - r)
        np.maximum(window, kernel[ky:ky + window.shape[0], kx:kx + window.shape[1]], out=window)
    return out


@dataclass(frozen=True)
class CoarseRed:
    """Red-cell instance labels found on a grid of step x step blocks of the mask
    (CountRules.rbc_grid_step): the cells' records are taken there, and the labels are brought to
    the mask's size only when something draws them (`on_mask`)."""

    labels: np.ndarray
    """int32 instance labels (1..N) per block; block (i, j) holds the mask's rows i*step.. and
    columns j*step.. (the last ones past an odd edge of the mask)."""
    mask_hw: tuple[int, int]
    step: int
    centres: np.ndarray = field(repr=False)
    """The centre heat-map at the mask's size."""
    diameter_px: float
    core_level: float
    """Heat-map value above which a cell's pixels keep their block's label (CountRules.centre_threshold)."""

    def on_mask(self, mask: np.ndarray) -> np.ndarray:
        """The labels at the mask's size, for drawing: each cell keeps its blocks' pixels where the
        (smoothed) centre heat-map is at least `core_level` (round its centre), and the rest of the
        mask's red pixels are flooded from there by the heat-map's altitude at the mask's own
        resolution, as `_red_cells` floods: touching cells part along the valley, not in block
        steps. A cell with no such core keeps all its blocks' red pixels. The ids stay the records'
        numbers."""
        h, w = self.mask_hw
        blocks = _for_opencv(self.labels)
        up = cv2.resize(blocks, (blocks.shape[1] * self.step, blocks.shape[0] * self.step),
                        interpolation=cv2.INTER_NEAREST)[:h, :w].astype(np.int32)
        surface = _smoothed_centres(self.centres, self.diameter_px)
        labels = np.where(surface >= self.core_level, up, 0)
        cored = np.zeros(int(self.labels.max()) + 1, bool)
        cored[labels] = True
        cored[0] = True
        labels = np.where(np.take(cored, up), labels, up)
        red = mask == RBC
        labels[~red] = 0
        _grow_labels(labels, red & (labels == 0), surface)
        return labels

    def stats(self, class_prob: np.ndarray | None) -> dict[str, np.ndarray]:
        """The cells' `instance_stats` in the mask's pixels (`class_prob` at the mask's size)."""
        prob = None if class_prob is None else block_mean(class_prob, self.step)
        return block_stats(self.labels, prob, self.step, self.mask_hw)


@dataclass(frozen=True)
class Window:
    """A class's instance labels worked out on some rows and columns of the mask (`_in_box`)."""

    labels: np.ndarray
    """int32 instance labels (1..N) on the window."""
    rows: np.ndarray
    cols: np.ndarray
    """The mask's rows and columns the window's rows and columns are."""
    mask_hw: tuple[int, int]

    def on_mask(self, mask: np.ndarray) -> np.ndarray:
        """The labels at the mask's size (0 outside the window)."""
        out = np.zeros(self.mask_hw, np.int32)
        if self.rows.size:
            out[np.ix_(self.rows, self.cols)] = self.labels
        return out

    def stats(self, class_prob: np.ndarray | None) -> dict[str, np.ndarray]:
        """The cells' `instance_stats` in the mask's pixels (`class_prob` at the mask's size)."""
        if self.rows.size == 0:
            return instance_stats(self.labels)
        return instance_stats(self.labels, class_prob, (self.rows, self.cols))


Found = np.ndarray | CoarseRed | Window
"""One class's instances: labels at the mask's size, or on part of it (`on_mask` brings them there)."""


def label_cells(mask: np.ndarray, centres: np.ndarray | None = None, *, rbc_diameter_px: float | None = None,
                rules: CountRules = DEFAULT_RULES) -> dict[str, np.ndarray]:
    """Instance labels per class (int32, 0 = none, 1..N cells) under the counting rules, all at the
    mask's size.

    `centres` is the red-cell centre heat-map in [0, 1] (sigmoid of the model's 'centres' output)
    at the mask's size. White cells and platelets are worked on the rows and columns near them,
    red cells with a centre map on blocks of the mask (CountRules.rbc_grid_step); all are brought
    to the mask's size here.
    """
    return _at_mask(_each_class(mask, centres, _diameter(mask, rbc_diameter_px, rules), rules), mask)


def _at_mask(found: dict[str, Found], mask: np.ndarray) -> dict[str, np.ndarray]:
    """Every class's labels at the mask's size, in CELL_CLASSES order."""
    return {name: lab if isinstance(lab, np.ndarray) else lab.on_mask(mask) for name, lab in found.items()}


def _each_class(mask: np.ndarray, centres: np.ndarray | None, d: float, rules: CountRules) -> dict[str, Found]:
    """Every class's instances under the rules (`d`: the red-cell diameter in the mask's pixels), in
    CELL_CLASSES order. (One thread: on two cores,
    white cells on a second thread beside the red ones made the camera field's post-processing
    0.2 ms slower, 5.10 against 4.88 ms p50 after the network, as the work holds the GIL often.)"""
    if centres is not None and centres.shape != mask.shape:
        raise ValueError(f"centres {centres.shape} and mask {mask.shape} differ in size")
    cell_area = math.pi * d * d / 4.0
    return {"rbc": _red_cells_coarse(mask, centres, d, rules),
            "wbc": _in_box(mask == WBC, lambda binary: _white_cells(binary, d, cell_area, rules),
                           _window_reach(rules.wbc_peak_spacing * d)),
            "platelet": _in_box(mask == PLATELET, lambda binary: _platelets(binary, d, cell_area, rules),
                                _window_reach(rules.platelet_peak_spacing * d))}


def _diameter(mask: np.ndarray, rbc_diameter_px: float | None, rules: CountRules) -> float:
    """The red-cell diameter the rules are relative to, in the mask's pixels: given, else measured
    from the mask, else the rules' default."""
    return rbc_diameter_px or rbc_diameter_from_mask(mask) or rules.default_rbc_diameter_px


def cut_cell_boxes(stats: dict[str, np.ndarray], shape: tuple[int, ...], disc_px: float) -> dict[str, np.ndarray]:
    """`instance_stats` (inclusive boxes, in the pixels of a mask of `shape`) with every box cut by
    one edge of the mask, and by no other, widened along that edge to at least the chord a disc of
    `disc_px` shows at the box's depth across the edge, round the box's middle and within the mask
    (CountRules.rbc_cut_chord). Nothing changes for `disc_px` <= 0."""
    if disc_px <= 0 or stats["area"].size == 0:
        return stats
    h, w = shape[0], shape[1]
    x0, y0, x1, y1 = stats["x0"], stats["y0"], stats["x1"], stats["y1"]
    left, right, top, bottom = x0 == 0, x1 == w - 1, y0 == 0, y1 == h - 1
    sideways = (left != right) & ~(top | bottom)  # cut by the left or the right edge alone
    upright = (top != bottom) & ~(left | right)
    y0, y1 = _at_least(y0, y1, _chord(x1 - x0 + 1, disc_px), h, sideways)
    x0, x1 = _at_least(x0, x1, _chord(stats["y1"] - stats["y0"] + 1, disc_px), w, upright)
    return {**stats, "x0": x0, "y0": y0, "x1": x1, "y1": y1}


def _chord(depth: np.ndarray, diameter: float) -> np.ndarray:
    """Length of the chord of a disc of `diameter` at `depth` from its edge (the diameter from
    half of it on)."""
    s = np.minimum(depth, diameter / 2.0)
    return 2.0 * np.sqrt(s * (diameter - s))


def _at_least(low: np.ndarray, high: np.ndarray, length: np.ndarray, size: int,
              where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive spans `low`..`high` widened, where `where` says and they are shorter than `length`,
    to `length` round their middle, clipped to 0..size - 1."""
    grow = where & (length > high - low + 1)
    if not grow.any():
        return low, high
    middle, half = (low + high) / 2.0, (length - 1) / 2.0
    wide_low = np.maximum(0, np.rint(middle - half)).astype(low.dtype)
    wide_high = np.minimum(size - 1, np.rint(middle + half)).astype(high.dtype)
    return np.where(grow, np.minimum(low, wide_low), low), np.where(grow, np.maximum(high, wide_high), high)


def _in_box(binary: np.ndarray, make: Callable[[np.ndarray], np.ndarray], reach: int) -> Window:
    """`make`'s labels of `binary`, worked out on the rows and columns within `reach` px of its
    pixels. A few cells far apart (white cells, platelets) then cost their own neighbourhoods, not
    the box spanning them (most of a field): an empty stretch longer than 2 * reach between them
    shrinks to that, so with `reach` beyond anything `make` reads across the background (its peak
    windows), every cell's labels are those of the whole frame; a cell touches the crop's edge
    only where it touches the frame's."""
    rows, cols = _near(binary.any(axis=1), reach), _near(binary.any(axis=0), reach)
    hw = (binary.shape[0], binary.shape[1])
    if rows.size == 0:
        return Window(np.zeros((0, 0), np.int32), rows, cols, hw)
    return Window(make(binary[rows][:, cols]), rows, cols, hw)  # rows, then columns: several times faster than np.ix_


def _near(occupied: np.ndarray, reach: int) -> np.ndarray:
    """Indices of a 1-D bool array within `reach` of a true one."""
    ones = np.ones(2 * reach + 1, np.int32)
    return np.flatnonzero(np.convolve(occupied.astype(np.int32), ones, mode="same"))


def _white_cells(binary: np.ndarray, d: float, cell_area: float, rules: CountRules) -> np.ndarray:
    """White-cell components split at distance-transform peaks, then pairs cut at their notches."""
    labels, comps = _split_touching(binary, rules.wbc_peak_min * d, rules.wbc_peak_spacing * d,
                                    rules.wbc_min_area * cell_area, rules.wbc_border_min_area * cell_area)
    return _split_at_notches(labels, comps, rules.wbc_pair_max_solidity, rules.wbc_pair_min_notch * d,
                             (rules.wbc_min_area * cell_area, max(1, round(NOTCH_CUT * d))))


def _platelets(binary: np.ndarray, d: float, cell_area: float, rules: CountRules) -> np.ndarray:
    """Platelet components from `platelet_min_area`, split where two touch, each part at most
    `platelet_max_area` (larger parts are no platelet: stain debris or a misread cell)."""
    labels, _ = _split_touching(binary, rules.platelet_peak_min * d, rules.platelet_peak_spacing * d,
                                rules.platelet_min_area * cell_area)
    if labels.max() == 0:
        return labels
    areas = np.bincount(labels.ravel())
    keep = areas <= rules.platelet_max_area * cell_area
    keep[0] = False
    if keep[1:].all():
        return labels
    relabel = np.zeros(areas.size, np.int32)
    relabel[keep] = np.arange(1, int(keep.sum()) + 1)
    return np.take(relabel, labels)


@dataclass(frozen=True)
class _Components:
    """Connected components of a binary image: labels (int32, ids 1..N) and, per id (row 0 the
    background), area and box (x, y, width, height) as cv2.connectedComponentsWithStats gives them."""

    labels: np.ndarray
    areas: np.ndarray
    boxes: np.ndarray

    @property
    def count(self) -> int:
        return self.areas.size - 1


def _components(binary: np.ndarray, min_area: float, border_min_area: float | None = None) -> _Components:
    """Connected components from `min_area` px, relabelled 1..N; with `border_min_area`, components
    touching the frame's border count from that (smaller) area."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    areas = stats[:, cv2.CC_STAT_AREA]
    keep = areas >= min_area
    if border_min_area is not None:
        keep |= on_border(stats, binary.shape) & (areas >= border_min_area)
    keep[0] = True
    boxes = stats[:, :cv2.CC_STAT_AREA]
    if keep.all():
        return _Components(labels, areas, boxes)
    relabel = np.zeros(n, np.int32)
    relabel[keep] = np.arange(int(keep.sum()), dtype=np.int32)
    return _Components(np.take(relabel, labels), areas[keep], boxes[keep])


def _split_touching(binary: np.ndarray, min_peak: float, spacing: float, min_area: float,
                    border_min_area: float | None = None) -> tuple[np.ndarray, _Components]:
    """Components of `binary` (>= min_area px, or >= border_min_area px on the frame's border),
    split by a distance-transform watershed: (instance labels, the components they split).

    The distance transform is the exact Euclidean one: on the network grid a white cell spans
    fewer pixels than in a frame (about 3x fewer across at the TXL-PBC frames' scale), and the 5x5
    chamfer estimate's small errors put two maxima on one large white cell's ridge (two val images
    counted a white cell twice; on the 1,008 train images the exact transform changes no count)."""
    comps = _components(binary, min_area, border_min_area)
    n = comps.count
    if n == 0:
        return comps.labels, comps
    keep = comps.labels > 0
    dist = cv2.distanceTransform(keep.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    count, markers = _peak_markers(dist, keep, min_peak, spacing)
    if _one_peak_each(markers, count, comps.labels):
        return comps.labels, comps
    # Every peak lies inside `keep`, so the watershed leaves no gap in the ids.
    labels, _ = _watershed(keep, markers, dist / max(float(dist.max()), 1e-6), comps.labels, np.ones(n + 1, bool))
    return labels, comps


def _one_peak_each(markers: np.ndarray, count: int, components: np.ndarray) -> bool:
    """Whether no component holds two of the `count` peaks: then the watershed would give each
    component whole to its peak (a pixel's 8 neighbours lie in its own component), and the
    components are the cells as they are (the usual case for white cells and platelets)."""
    if count <= 1:
        return True
    ys, xs, _ = pixel_coordinates(markers != 0)
    pairs = np.unique(components[ys, xs].astype(np.int64) * (count + 1) + markers[ys, xs])
    return np.unique(pairs // (count + 1)).size == pairs.size


NOTCH_CUT = 0.03
"""Width of the cut between two notches, in red-cell diameters: 3 px at the about 100-px red cells
of the TXL-PBC frames the white-cell pair rule was set on (1 px on the network grid)."""



def _split_at_notches(labels: np.ndarray, regions: _Components, max_solidity: float, min_notch_px: float,
                      part: tuple[float, int]) -> np.ndarray:
    """`labels` with every region (of `regions`, the components the labels split) the peaks left
    whole cut in two along a line between its two notches, when its outline has two deep ones (and
    a solidity under `max_solidity`) and both parts hold at least `part`'s min pixels; the cut is
    `part`'s width in px: two round cells in contact, seen as one region. White cells are few:
    each large region is looked at in its own box."""
    min_part_px, cut_px = part
    large = np.flatnonzero(regions.areas >= 2 * min_part_px)
    out = labels.copy()
    next_id = int(labels.max()) + 1
    for r in large[large > 0].tolist():
        x, y, w, h = regions.boxes[r].tolist()
        window = (slice(y, y + h), slice(x, x + w))
        inside = regions.labels[window] == r
        ids = labels[window][inside]
        if ids.min() != ids.max():  # the peaks split it already
            continue
        if _cut_pair(out[window], inside, (max_solidity, min_notch_px, min_part_px, cut_px), next_id):
            next_id += 1
    return _compact(out) if next_id > int(labels.max()) + 1 else labels


def _cut_pair(part: np.ndarray, inside: np.ndarray, rule: tuple[float, float, float, int], new_id: int) -> bool:
    """In place on one region's window: cut the region (`inside`) between its two notches when
    `rule` (max solidity, min notch depth, min part size, cut width) says it is two cells; the
    second part takes `new_id`. Whether it was cut."""
    max_solidity, min_notch_px, min_part_px, cut_px = rule
    region = inside.view(np.uint8)
    notches = _two_deep_notches(region, max_solidity, min_notch_px)
    if notches is None:
        return False
    cut = region.copy()
    cv2.line(cut, notches[0], notches[1], 0, thickness=cut_px)
    k, parts, stats, _ = cv2.connectedComponentsWithStats(cut, connectivity=4)
    if k < 3:
        return False
    first, second = np.argsort(stats[1:, cv2.CC_STAT_AREA])[::-1][:2] + 1
    if stats[second, cv2.CC_STAT_AREA] < min_part_px:
        return False
    old_id = int(part[inside][0])
    part[inside] = 0
    part[parts == first] = old_id
    part[parts == second] = new_id
    _grow_labels(part, inside)  # the cut line and crumbs go to the part they touch
    return True


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


def _red_cells_coarse(mask: np.ndarray, centres: np.ndarray | None, d: float,
                      rules: CountRules) -> np.ndarray | CoarseRed:
    """`_red_cells` on step x step blocks of the mask (`rules.rbc_grid_step`; a block is red when
    at least half its pixels are, its centre value their mean), or on the mask itself (labels at
    its size) when the step is 1. Only with a centre heat-map (the path the step was chosen on):
    the distance-transform path (no centre head) splits touching cells a block off centre, so it
    stays on the mask. The mask is padded to whole blocks first, so every reduction is exact."""
    step = rules.rbc_grid_step
    h, w = mask.shape
    if step <= 1 or centres is None or min(h, w) < 2 * step:
        return _red_cells(mask, centres, d, math.pi * d * d / 4.0, rules)
    coarse = np.ascontiguousarray(_whole_blocks(mask, step)[::step, ::step])  # each block's first pixel's class ...
    red = block_mean(cv2.compare(mask, RBC, cv2.CMP_EQ), step) >= 128
    coarse[(coarse == RBC) & ~red] = BACKGROUND  # ... but red by the majority
    coarse[red] = RBC
    coarse_d = d / step
    labels = _red_cells(coarse, block_mean(centres, step), coarse_d, math.pi * coarse_d * coarse_d / 4.0, rules)
    return CoarseRed(labels, (h, w), step, centres, d, rules.centre_threshold)


def _smoothed_centres(centres: np.ndarray, d: float) -> np.ndarray:
    """The centre heat-map smoothed over a twentieth of a cell (the surface peaks and floods read)."""
    return cv2.GaussianBlur(centres.astype(np.float32), (0, 0), max(0.5, 0.05 * d))


def _whole_blocks(image: np.ndarray, step: int) -> np.ndarray:
    """`image` padded (its last row and column repeated) to whole step x step blocks."""
    h, w = image.shape[:2]
    return cv2.copyMakeBorder(image, 0, (-h) % step, 0, (-w) % step, cv2.BORDER_REPLICATE)


def block_mean(image: np.ndarray, step: int) -> np.ndarray:
    """The mean of every step x step block of `image` (uint8 or float32; see `_whole_blocks` for
    the edge): one OpenCV area reduction by a whole factor, exact and many times faster than one
    to an arbitrary size."""
    padded = _whole_blocks(image, step)
    return cv2.resize(padded, (padded.shape[1] // step, padded.shape[0] // step), interpolation=cv2.INTER_AREA)


def _red_cells(mask: np.ndarray, centres: np.ndarray | None, d: float, cell_area: float,
               rules: CountRules) -> np.ndarray:
    red = mask == RBC
    if not red.any():
        return np.zeros(mask.shape, np.int32)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(red.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    if centres is not None:
        # A centre may sit under a white cell that overlaps the red one: allow any cell pixel near red.
        near_red = cv2.dilate(red.view(np.uint8), _K3).view(bool) | (mask == WBC)
        surface = _smoothed_centres(centres, d)
        _, markers = _peak_markers(surface, near_red, rules.centre_threshold, rules.peak_spacing * d)
        landscape = surface
    else:
        dist = cv2.distanceTransform(red.view(np.uint8), cv2.DIST_L2, 5)
        _, markers = _peak_markers(dist, red, rules.dt_peak_min * d, rules.peak_spacing * d * 1.5)
        landscape = dist / max(float(dist.max()), 1e-6)
    # Red components that got no peak but look like a cell (e.g. cut by the border) count once.
    areas = stats[:, cv2.CC_STAT_AREA]
    labels, gaps = _watershed(red, markers, landscape, comp, areas >= rules.rbc_min_area * cell_area)
    # Peaks that fell on a white cell next to red keep their id even though no red pixel joined them.
    return _compact(labels, markers) if gaps else labels


FLOOD_LEVELS = 8
"""Altitude steps of the marker flood: more follow the landscape more closely and cost a few more
dilations (a power of two, so the steps are exact in floating point)."""


_NEIGHBOURS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def _watershed(red: np.ndarray, markers: np.ndarray, landscape: np.ndarray, comp: np.ndarray,
               orphan: np.ndarray) -> tuple[np.ndarray, bool]:
    """Marker-controlled watershed by immersion: `markers` (ids 1..N) grow through `red` one ring
    at a time, first over the pixels where `landscape` (0-1, high at cell centres) is highest, then
    down `FLOOD_LEVELS` steps of it, so touching cells part along the valley between their
    centres. (cv2.watershed floods by colour steps between neighbours, not by altitude: on a flat
    plateau one seed took a whole clump and its neighbours kept a patch round their seed, so red
    cells' boxes missed the labelled ones; the counts, one cell per seed, were the same.)

    `comp` holds `red`'s n - 1 connected components (ids 1..n-1). A seed belongs to each component
    within one pixel of it; a component with one seed is that seed's cell whole, only clumps with
    several are flooded. A component no seed reached is one cell of its own when `orphan` (bool
    per id, n of them) says so, numbered after the seeds in component order. Each pixel's label
    comes from one lookup by component. Returns the labels and whether an id may be missing: every
    seed keeps its pixels on `red`, so only a seed wholly off it (zeroed) can leave a gap."""
    n = orphan.size
    ys, xs, _ = pixel_coordinates(markers != 0)
    if ys.size == 0:
        return np.take(_orphan_ids(np.zeros(n, np.int32), orphan, 1), comp), False
    ids = markers[ys, xs].astype(np.int64)
    h, w = comp.shape
    near = comp[np.clip(ys[:, None] + _NEIGHBOURS[:, 0], 0, h - 1), np.clip(xs[:, None] + _NEIGHBOURS[:, 1], 0, w - 1)]
    base = int(ids.max()) + 1
    pairs = np.unique((near.astype(np.int64) * base + ids[:, None])[near > 0])
    owners, seeds = pairs // base, (pairs % base).astype(np.int32)
    seeds_per_comp = np.bincount(owners, minlength=n)
    # Per component: its one seed, -1 for a clump of several, 0 for none.
    code = np.where(seeds_per_comp > 1, -1, 0).astype(np.int32)
    lone = seeds_per_comp[owners] == 1
    code[owners[lone]] = seeds[lone]
    code[0] = 0
    code = _orphan_ids(code, orphan & (seeds_per_comp == 0), base)
    # Every pixel of a lone seed's or an orphan's component takes its id; the seeds keep theirs
    # where their component does not give one (clumps, and off red).
    labels = np.take(np.maximum(code, 0), comp)
    at_seed = labels[ys, xs]
    labels[ys, xs] = np.where(at_seed > 0, at_seed, ids)
    if (code < 0).any():
        _grow_labels(labels, np.take(code < 0, comp), landscape)
    off_red = ~red[ys, xs]  # seeds beside red (on a white cell) lent it their id; they are no red pixel
    labels[ys[off_red], xs[off_red]] = 0
    return labels, bool(off_red.any())


def _orphan_ids(code: np.ndarray, new: np.ndarray, next_id: int) -> np.ndarray:
    """`code` (a label per component id) with the components marked in `new` (0 ignored) numbered
    from `next_id` in id order."""
    new = new.copy()
    new[0] = False
    code[new] = np.arange(next_id, next_id + int(new.sum()), dtype=np.int32)
    return code


def _grow_labels(labels: np.ndarray, where: np.ndarray, landscape: np.ndarray | None = None) -> None:
    """In place: unlabelled pixels of `where` take a neighbouring label (the highest id of their
    3x3 neighbourhood), one ring per round until no pixel is reached; with a `landscape` (0-1),
    first only where it is at least each of FLOOD_LEVELS falling levels in turn (the flood by
    altitude). Only `where`'s pixels change and they read only their neighbours, so the work is
    inside `where`'s box, on a copy OpenCV's morphology takes: five OpenCV calls per ring."""
    x, y, w, h = cv2.boundingRect(where.view(np.uint8))
    if w == 0 or h == 0:
        return
    box = (slice(max(0, y - 1), y + h + 1), slice(max(0, x - 1), x + w + 1))
    work = _for_opencv(labels[box])
    inside = np.ascontiguousarray(where[box]).view(np.uint8)
    stages = [inside]
    if landscape is not None:
        # Level k of FLOOD_LEVELS (k/FLOOD_LEVELS, falling) admits the pixels whose landscape reaches
        # it (k/FLOOD_LEVELS is exact in floating point, FLOOD_LEVELS being a power of two).
        # As whole levels: the product is exact and the cast truncates, so level >= k exactly where
        # the landscape >= k/FLOOD_LEVELS, and each stage is one comparison of bytes, not of floats.
        level = (np.asarray(landscape[box], np.float32) * FLOOD_LEVELS).astype(np.uint8)
        stages = [cv2.bitwise_and(cv2.compare(level, k, cv2.CMP_GE), inside)
                  for k in range(FLOOD_LEVELS - 1, 0, -1)] + stages
    open_ = np.empty(work.shape, np.uint8)
    grown = np.empty_like(work)
    for allowed in stages:
        before = -1
        while True:  # until a ring reaches nothing (no open pixel left, or none fewer than before it)
            cv2.compare(work, 0, cv2.CMP_EQ, dst=open_)
            cv2.bitwise_and(open_, allowed, dst=open_)
            remaining = cv2.countNonZero(open_)
            if remaining == 0 or remaining == before:
                break
            before = remaining
            cv2.dilate(work, _K3, dst=grown)
            cv2.copyTo(grown, open_, work)
    labels[box] = work


def _for_opencv(labels: np.ndarray) -> np.ndarray:
    """A copy of int32 labels in the smallest type OpenCV's morphology takes that holds their ids
    (uint8, uint16, or float32, exact up to 2^24)."""
    top = int(labels.max())
    return labels.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.float32)


def _compact(labels: np.ndarray, markers: np.ndarray | None = None) -> np.ndarray:
    """Renumber ids 1..N (in place where it can); a marker whose watershed region holds no red pixel
    still counts as a cell (its centre sits on an overlapping white cell), kept as its marker pixels."""
    out = labels
    present = np.bincount(out.ravel()) > 0
    if markers is not None:
        top = int(markers.max())
        absent = np.ones(top + 1, bool)
        absent[:min(top + 1, present.size)] &= ~present[:top + 1]
        absent[0] = False
        if absent.any():  # marker ids are 1..top, all of them drawn
            where = np.take(absent, markers) & (out == 0)
            out[where] = markers[where]
            present = np.bincount(out.ravel()) > 0
    present[0] = False
    if present[1:].all():
        return out
    lut = np.zeros(present.size, np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return np.take(lut, out)


@dataclass(frozen=True)
class FoundCells:
    """The cell records of a frame and the instance labels they were taken from."""

    cells: CellTable
    """The records, in frame pixels."""
    geometry: Geometry | None
    """The grid the labels lie on (None: they are at the frame's size)."""
    found: dict[str, Found] = field(repr=False)
    """Each class's instances as found (the records' ids)."""
    mask: np.ndarray = field(repr=False)
    """The class mask the cells were found on (red cells' labels are brought to it on first use)."""

    @functools.cached_property
    def labels(self) -> dict[str, np.ndarray]:
        """Per class, int32 instance labels at the mask's size (the network grid for a segmentation),
        the ids the records' numbers. Red cells found on the coarse grid are brought to the mask's
        size here, when first asked for (overlays, crops): counting and records do not need it."""
        return _at_mask(self.found, self.mask)

    def frame_labels(self) -> dict[str, np.ndarray]:
        """The labels at the frame's size, for overlays and crops (see `labels_at_frame`)."""
        return labels_at_frame(self.labels, self.geometry)


def labels_at_frame(labels: dict[str, np.ndarray], geometry: Geometry | None) -> dict[str, np.ndarray]:
    """Instance labels on `geometry`'s grid upsampled (nearest) to its frame; as they are without
    a geometry. Each cell's frame box (runtime.analysis.cells) bounds its pixels here."""
    if geometry is None:
        return labels
    return {name: mask_to_frame(lab, geometry) for name, lab in labels.items()}


def find_cells(mask: np.ndarray, centres: np.ndarray | None = None, *, class_prob: np.ndarray | None = None,
               rbc_diameter_px: float | None = None, rules: CountRules = DEFAULT_RULES,
               um_per_px: float | None = None, geometry: Geometry | None = None,
               wbc_min_confidence: float = 0.0) -> FoundCells:
    """Every cell of a frame under the counting rules: the one way cells are found and counted.

    `class_prob`: optional probability of each pixel's class (each cell's confidence is its mean);
    `wbc_min_confidence`: with `class_prob`, a white cell clear of the frame's edge whose confidence
    is under this is not counted (the model card's plan, InferencePlan.wbc_min_confidence: how sure
    a model is of its white cells is its own);
    `um_per_px`: a calibration, for the records' µm values; `geometry`: `mask` lies on its grid
    (the resized frame; `rbc_diameter_px` and `rules` in grid pixels), the records are mapped to
    its frame.
    """
    d = _diameter(mask, rbc_diameter_px, rules)
    found = _each_class(mask, centres, d, rules)
    stats = {name: instance_stats(lab, class_prob) if isinstance(lab, np.ndarray) else lab.stats(class_prob)
             for name, lab in found.items()}
    stats["rbc"] = cut_cell_boxes(stats["rbc"], mask.shape, rules.rbc_cut_chord * d)
    if class_prob is not None and wbc_min_confidence > 0:
        found["wbc"], stats["wbc"] = _confident_inside(found["wbc"], stats["wbc"], mask.shape, wbc_min_confidence)
    cells = {name: class_cells(name, s, mask.shape, um_per_px, geometry) for name, s in stats.items()}
    return FoundCells(CellTable(cells), geometry, found, mask)


def _confident_inside(found: Window, stats: dict[str, np.ndarray], shape: tuple[int, ...],
                      min_confidence: float) -> tuple[Window, dict[str, np.ndarray]]:
    """A class's instances without those clear of the frame's edge whose confidence is under
    `min_confidence` (a cell cut by the edge shows the network less of itself, so it is kept), the
    rest renumbered 1..N in their order (labels and records keep matching ids)."""
    keep = (stats["confidence"] >= min_confidence) | on_edge(stats, shape)
    if keep.all():
        return found, stats
    lut = np.zeros(keep.size + 1, np.int32)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    stats = {key: column[keep] for key, column in stats.items()}
    return dataclasses.replace(found, labels=np.take(lut, found.labels)), stats


def count_cells(mask: np.ndarray, centres: np.ndarray | None = None, *, rbc_diameter_px: float | None = None,
                rules: CountRules = DEFAULT_RULES) -> dict[str, int]:
    """Per-class cell counts {rbc, wbc, platelet}: the number of find_cells' instances, border-cut
    cells included.

    `mask`: HxW class indices; `centres`: optional HxW red-cell centre heat-map in [0, 1] at the same
    size; `rbc_diameter_px`: red-cell diameter in mask pixels if known (else measured from the mask).
    """
    return find_cells(mask, centres, rbc_diameter_px=rbc_diameter_px, rules=rules).cells.counts


def count_cells_field_edge(mask: np.ndarray, centres: np.ndarray | None = None, *,
                           rbc_diameter_px: float | None = None, rules: CountRules = DEFAULT_RULES) -> dict[str, int]:
    """Counts under a counting-frame rule: cells touching the right or bottom edge are left out
    (those touching the top or left edge count), so adjacent fields never count a cell twice."""
    found = find_cells(mask, centres, rbc_diameter_px=rbc_diameter_px, rules=rules)
    counts = found.cells.counts
    for name, labels in found.labels.items():  # the cells' own pixels: a cut red cell's box is widened
        touching = np.unique(np.concatenate((labels[-1, :], labels[:, -1])))
        counts[name] -= int(np.count_nonzero(touching))
    return counts
