"""The labeller: cell boxes -> class masks.

Each box becomes the ellipse inscribed in it. Red cells are painted first, then platelets, then
white cells, so where boxes overlap the rarer class wins. An optional ignore ring (IGNORE_INDEX)
around every ellipse's outline keeps the loss off the pixels a box cannot place reliably. A box
cut by one edge of the frame holds only the visible part of its cell: `whole_cells` replaces it
by the box of the disc whose visible part it is, so the painted part reaches the edge along the
whole cut (the ellipse inscribed in the cut box would taper to a point there).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import cv2
import numpy as np

from runtime.contracts.classes import BACKGROUND, PLATELET, RBC, WBC
from runtime.inference.preprocess import IGNORE_INDEX
from training.txl_pbc import Box

PAINT_ORDER: tuple[int, ...] = (RBC, PLATELET, WBC)
_SHIFT = 4  # sub-pixel precision for cv2.ellipse (coordinates in 1/16 px)


def _draw_ellipse(canvas: np.ndarray, box: Box, value: int, thickness: int) -> None:
    scale = 1 << _SHIFT
    centre = (int(round(box.cx * scale - scale / 2)), int(round(box.cy * scale - scale / 2)))
    # cv2 fills every pixel the outline touches; half a pixel less keeps the area true to the box.
    axes = (max(1, int(round((box.w - 1) * scale / 2))), max(1, int(round((box.h - 1) * scale / 2))))
    cv2.ellipse(canvas, centre, axes, 0, 0, 360, int(value), thickness, cv2.LINE_8, _SHIFT)


CUT_MARGIN_PX = 2.0
"""A box within this many pixels of an edge of the frame is cut by it (label boxes are clipped to
the frame, give or take rounding)."""


def cut_edges(box: Box, frame_hw: tuple[int, ...], margin: float = CUT_MARGIN_PX) -> tuple[bool, bool, bool, bool]:
    """Whether the box reaches within `margin` px of the frame's left, right, top and bottom edge."""
    h, w = frame_hw[0], frame_hw[1]
    return (box.cx - box.w / 2 <= margin, box.cx + box.w / 2 >= w - margin,
            box.cy - box.h / 2 <= margin, box.cy + box.h / 2 >= h - margin)


def whole_cells(boxes: Iterable[Box], frame_hw: tuple[int, int], margin: float = CUT_MARGIN_PX) -> list[Box]:
    """`boxes` (in the frame's pixels) with each one cut by exactly one edge of the frame replaced
    by the box of the disc whose part inside the frame it is: its extent along the edge, c, is the
    disc's chord at the edge and its depth across it, s, the rest. With b = c / 2: s >= c is a cell
    mostly in view (the box as it is); b <= s < c a disc of diameter c centred s - b from the
    edge; s < b a disc of radius (s^2 + b^2) / (2 s) centred outside the frame. Painting the ellipse
    inscribed in the new box and clipping it to the frame gives that visible part. Boxes cut by two
    edges (corners) or by none are kept."""
    h, w = frame_hw
    out = []
    for box in boxes:
        left, right, top, bottom = cut_edges(box, frame_hw, margin)
        sideways, upright = left != right, top != bottom  # cut by one of the two edges, not both
        if sideways and not (top or bottom):
            centre, radius = _disc_across(box.w, box.h)
            if radius:
                box = Box(box.cls, centre if left else w - centre, box.cy, 2 * radius, 2 * radius)
        elif upright and not (left or right):
            centre, radius = _disc_across(box.h, box.w)
            if radius:
                box = Box(box.cls, box.cx, centre if top else h - centre, 2 * radius, 2 * radius)
        out.append(box)
    return out


def _disc_across(depth: float, chord: float) -> tuple[float, float]:
    """(centre's distance from the edge, inward positive; radius) of the disc showing `depth`
    across the edge and `chord` along it; radius 0 when the box shows most of its cell (depth >=
    chord) and stays as it is."""
    b = chord / 2.0
    if depth >= chord or depth <= 0 or b <= 0:
        return 0.0, 0.0
    if depth >= b:
        return depth - b, b
    radius = (depth * depth + b * b) / (2.0 * depth)
    return depth - radius, radius


def boxes_to_mask(boxes: Iterable[Box], shape: tuple[int, int], ignore_ring_px: int = 0,
                  ring_classes: Collection[int] | None = None) -> np.ndarray:
    """HxW uint8 class mask of filled ellipses inscribed in `boxes`, painted RBC < platelet < WBC.

    With `ignore_ring_px` > 0 a band of that width centred on the ellipse outline of every box whose
    class is in `ring_classes` (None: all) is set to IGNORE_INDEX (the loss skips it); the
    evaluation masks use 0. On a cell a few pixels across (a platelet) the band is a large share of
    its area, and the network left free there draws it too small.
    """
    boxes = list(boxes)
    mask = np.full(shape, BACKGROUND, dtype=np.uint8)
    for cls in PAINT_ORDER:
        for box in boxes:
            if box.cls == cls:
                _draw_ellipse(mask, box, cls, cv2.FILLED)
    if ignore_ring_px > 0:
        ring = np.zeros(shape, dtype=np.uint8)
        for box in boxes:
            if ring_classes is None or box.cls in ring_classes:
                _draw_ellipse(ring, box, 1, int(ignore_ring_px))
        mask[ring > 0] = IGNORE_INDEX
    return mask


def boxes_to_instances(boxes: Iterable[Box], shape: tuple[int, int]) -> np.ndarray:
    """HxW int32 instance ids (1..N in box order, 0 = none), painted in the same order as the mask."""
    boxes = list(boxes)
    instances = np.zeros(shape, dtype=np.int32)
    for cls in PAINT_ORDER:
        for i, box in enumerate(boxes):
            if box.cls == cls:
                _draw_ellipse(instances, box, i + 1, cv2.FILLED)
    return instances


def centre_heatmap(boxes: Iterable[Box], shape: tuple[int, int], classes: tuple[int, ...] = (RBC,),
                   sigma_fraction: float = 0.15) -> np.ndarray:
    """HxW float32 target for the cell-centre head: a Gaussian peak (height 1) at each box centre.

    Sigma follows each box's size so that a peak marks one cell at any magnification; overlapping
    peaks take the maximum, keeping neighbours separable.
    """
    heat = np.zeros(shape, dtype=np.float32)
    h, w = shape
    for box in boxes:
        if box.cls not in classes:
            continue
        sigma = max(1.0, sigma_fraction * box.diameter)
        r = int(3 * sigma) + 1
        x0, x1 = max(0, int(box.cx) - r), min(w, int(box.cx) + r + 1)
        y0, y1 = max(0, int(box.cy) - r), min(h, int(box.cy) + r + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        xs = np.arange(x0, x1, dtype=np.float32) + 0.5 - box.cx
        ys = np.arange(y0, y1, dtype=np.float32) + 0.5 - box.cy
        g = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma * sigma))
        np.maximum(heat[y0:y1, x0:x1], g, out=heat[y0:y1, x0:x1])
    return heat


def boxes_from_instances(instances: np.ndarray, class_mask: np.ndarray) -> list[Box]:
    """Tight boxes around every instance of an instance-id map (0 = none); each box takes the class
    most of its pixels carry. Used to measure the labeller where the true masks are known."""
    ids = instances.ravel().astype(np.int64)
    n = int(ids.max()) + 1 if ids.size else 1
    h, w = instances.shape
    ys, xs = np.divmod(np.arange(ids.size), w)
    x0 = np.full(n, w); y0 = np.full(n, h); x1 = np.full(n, -1); y1 = np.full(n, -1)
    np.minimum.at(x0, ids, xs); np.minimum.at(y0, ids, ys)
    np.maximum.at(x1, ids, xs); np.maximum.at(y1, ids, ys)
    votes = np.bincount(ids * 256 + class_mask.ravel(), minlength=n * 256).reshape(n, 256)
    votes[:, BACKGROUND] = 0
    boxes = []
    for inst in range(1, n):
        if x1[inst] < 0 or votes[inst].max() == 0:
            continue
        cls = int(votes[inst].argmax())
        bx0, bx1, by0, by1 = x0[inst], x1[inst] + 1, y0[inst], y1[inst] + 1
        boxes.append(Box(cls, (bx0 + bx1) / 2, (by0 + by1) / 2, float(bx1 - bx0), float(by1 - by0)))
    return boxes


def dice_per_class(pred: np.ndarray, truth: np.ndarray, num_classes: int = 4) -> list[float]:
    """Dice of two class masks per class, pixels with IGNORE_INDEX in `truth` left out
    (1.0 where a class is absent from both)."""
    valid = truth != IGNORE_INDEX
    out = []
    for c in range(num_classes):
        p, t = (pred == c) & valid, (truth == c) & valid
        denom = int(p.sum()) + int(t.sum())
        out.append(1.0 if denom == 0 else 2.0 * int((p & t).sum()) / denom)
    return out


def labeller_dice_on_synthetic(frames: int = 12, seed: int = 0, um_per_px: float = 0.2,
                               box_growth: float = 0.0, cut_cells: bool = True) -> dict[str, float]:
    """Pooled per-class Dice of the labeller on synthetic smears, whose exact masks are known.

    Each visible cell gets its tight box (as a careful annotator would draw it), the labeller turns
    the boxes into a mask, and that mask is compared with the generator's own. `box_growth` widens
    every box by that fraction (hand-drawn boxes are looser than tight ones); `cut_cells` False
    paints boxes cut by the frame's edge as they are, not through `whole_cells`.
    """
    from runtime.contracts.classes import CLASS_NAMES
    from runtime.capture.synthetic import generate_smear

    inter = np.zeros(len(CLASS_NAMES))
    denom = np.zeros(len(CLASS_NAMES))
    for i in range(frames):
        smear = generate_smear(seed + i, um_per_px=um_per_px)
        boxes = [Box(b.cls, b.cx, b.cy, b.w * (1 + box_growth), b.h * (1 + box_growth))
                 for b in boxes_from_instances(smear.instances, smear.mask)]
        labelled = boxes_to_mask(whole_cells(boxes, smear.mask.shape) if cut_cells else boxes, smear.mask.shape)
        for c in range(len(CLASS_NAMES)):
            p, t = labelled == c, smear.mask == c
            inter[c] += (p & t).sum()
            denom[c] += p.sum() + t.sum()
    return {name: round(float(2 * inter[c] / max(denom[c], 1)), 4) for c, name in enumerate(CLASS_NAMES)}
