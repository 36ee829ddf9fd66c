"""The scale search: run the network at the scale where red cells look as it learnt them.

A frame's red-cell size is unknown without a calibration, so the network itself measures it:
a first pass at the classical guess, passes at the plan's other candidate scales, refinements
from the size measured on the most confident pass (see `search_scale`). The final pass becomes
the frame's segmentation (`to_segmentation`, with the plan's two mask rules) on the network grid
itself, cropped to the resized frame: cells are found there and mapped to frame coordinates
(runtime.analysis.cells), and only what draws or scores a frame-size picture upsamples it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from runtime.analysis.cells import pixel_coordinates
from runtime.analysis.counting import DEFAULT_RULES, CountRules, FoundCells, find_cells
from runtime.contracts.card_sections import InferencePlan, PreprocessParams
from runtime.contracts.classes import BACKGROUND, PLATELET, WBC
from runtime.inference.passes import DEFAULT_PLAN, GridClasses, Network, NetworkPass
from runtime.inference.preprocess import Geometry, ScaleDecision, mask_to_frame, scores_to_frame


@dataclass(frozen=True)
class Segmentation:
    """One frame's prediction on the network grid, cropped to the resized frame (`geometry`'s
    resized_hw): the frame's pixels at the scale the network saw them."""

    mask: np.ndarray
    """hxw uint8 class indices on the grid."""
    centres: np.ndarray | None
    """hxw float32 red-cell centre heat-map in [0, 1] on the grid, when the model has a centre head."""
    scale: ScaleDecision
    """The resampling used for the final pass (source 'measured' after a refining pass)."""
    rbc_diameter_px: float | None
    """Red-cell diameter in frame pixels as measured on the prediction (None without red cells)."""
    passes: int
    """Network runs it took."""
    geometry: Geometry
    """Frame <-> grid: the frame's size, the resized region and the scale."""
    class_prob: np.ndarray | None = None
    """hxw float32: the network's probability of each pixel's class in `mask` (softmax of the
    final pass), from which each cell's confidence is taken."""
    scores: np.ndarray | None = field(default=None, repr=False)
    """CxHxW class scores of the final pass on the grid (resized region), for `frame_mask`."""
    plan: InferencePlan = DEFAULT_PLAN
    """The plan whose mask rules made `mask`."""

    @property
    def grid_rbc_diameter_px(self) -> float | None:
        """The measured red-cell diameter in grid pixels (what the counting rules scale with)."""
        return None if self.rbc_diameter_px is None else self.rbc_diameter_px * self.geometry.scale

    def frame_mask(self) -> np.ndarray:
        """The class mask at the frame's own size, for pictures and Dice, outside the timed path:
        the scores resampled (bilinear) to the frame, their argmax and the plan's mask rules at the
        frame's pixels, which keeps the sub-grid outline of a small platelet that upsampling the grid
        mask would square off; the grid mask upsampled (nearest) without scores."""
        if self.scores is None:
            return mask_to_frame(self.mask, self.geometry)
        scores = scores_to_frame(self.scores, self.geometry)
        return mask_rules(scores.argmax(axis=0).astype(np.uint8), scores, self.plan,
                          self.rbc_diameter_px, 1.0 / self.geometry.scale)


def _at_diameter(params: PreprocessParams, diameter: float, source: str) -> ScaleDecision:
    scale = float(np.clip(params.target_rbc_diameter_px / diameter, params.min_scale, params.max_scale))
    return ScaleDecision(scale=scale, source=source, rbc_diameter_px=float(diameter))  # type: ignore[arg-type]


def search_scale(network: Network, frame: np.ndarray, first: NetworkPass) -> list[NetworkPass]:
    """Every pass of the scale search, `first` (the pass at decide_scale's decision) included; the
    last one is the pass the frame's segmentation comes from.

    The classical estimate (preprocess) is only a first guess, and it errs mostly low (sub-cell
    texture looks like small cells), where the network, shown cells several times too large,
    agrees with it. So the network also runs at the plan's other `candidates` times the guess,
    and the most confident pass that found red cells settles the coarse scale. Confidence is no fine measure (it
    rises as cells grow), so the scale is then set by the red-cell size measured on that pass's
    mask (divided by the model's measured_diameter_ratio, and within `max_refinement_step` of
    the size it was run at): a pass at that size, repeated up to `refinements` times while the
    size moves by more than `tolerance`. A calibrated frame runs once (its flipped runs only with the
    plan's `flip_when_calibrated`); a frame with no estimate runs once, flip-averaged as the plan says.
    """
    params, plan = network.params, network.plan
    decision = first.decision
    if decision.source == "calibration" or decision.rbc_diameter_px is None:
        return [_final(network, first)]
    guess = decision.rbc_diameter_px
    passes = [first if f == 1.0 else network.predict(network.prepare(frame, _at_diameter(params, guess * f, "estimated")))
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
        current = network.predict(network.prepare(frame, _at_diameter(params, estimate, "measured")))
        passes.append(current)
    passes = [p for p in passes if p is not current]
    return passes + [_final(network, current)]


def coarse_choice(passes: list[NetworkPass]) -> NetworkPass:
    """The most confident pass that found red cells. A pass at a scale where cells are too small
    to recognise is confidently all plasma: it wins only when no pass found a red cell."""
    return max(passes, key=lambda p: (p.measured is not None, p.confidence))


def _final(network: Network, chosen: NetworkPass) -> NetworkPass:
    """`chosen`, flip-averaged where the plan asks for it: `flip_when_calibrated` on a calibrated
    frame, `flip_average` on any other."""
    plan = network.plan
    calibrated = chosen.decision.source == "calibration"
    flip = plan.flip_when_calibrated if calibrated else plan.flip_average
    return network.flip_averaged(chosen) if flip else chosen


def white_cells_at_border(mask: np.ndarray, scores: np.ndarray, band_px: float, min_prob: float) -> np.ndarray:
    """`mask` with pixels within `band_px` of the frame's edge turned white cell where the network
    gives that class at least `min_prob` (softmax of `scores`, CxHxW at the mask's size). Only the
    four edge strips are read."""
    band = int(round(band_px))
    if band <= 0 or min_prob >= 1.0:
        return mask
    out = mask.copy()
    for strip in ((slice(0, band), slice(None)), (slice(-band, None), slice(None)),
                  (slice(None), slice(0, band)), (slice(None), slice(-band, None))):
        edge = scores[(slice(None), *strip)].astype(np.float32)
        edge = np.exp(edge - edge.max(axis=0, keepdims=True))
        np.copyto(out[strip], np.uint8(WBC), where=edge[WBC] / edge.sum(axis=0) >= min_prob)
    return out


def grow_platelets(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """`mask` with plasma pixels within `radius_px` (Euclidean) of a platelet pixel turned platelet:
    a dilation by the disc of those offsets, inside the platelets' box widened by the radius (the
    same pixels as thresholding the exact distance transform of the whole mask, at a fraction of
    its cost)."""
    platelet = mask == PLATELET
    if radius_px <= 0 or not platelet.any():
        return mask
    disc = _disc(radius_px)
    r = disc.shape[0] // 2
    x, y, w, h = cv2.boundingRect(platelet.view(np.uint8))
    box = (slice(max(0, y - r), y + h + r), slice(max(0, x - r), x + w + r))
    near = cv2.dilate(np.ascontiguousarray(platelet[box]).view(np.uint8), disc).view(bool)
    grown = mask.copy()
    np.copyto(grown[box], np.uint8(PLATELET), where=near & (mask[box] == BACKGROUND))
    return grown


def _disc(radius_px: float) -> np.ndarray:
    """uint8 kernel of the offsets whose Euclidean length (float32, as cv2.distanceTransform gives
    it) is at most `radius_px`."""
    r = int(math.floor(radius_px))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    return (np.sqrt((dy * dy + dx * dx).astype(np.float32)) <= radius_px).astype(np.uint8)


def mask_rules(mask: np.ndarray, scores: np.ndarray, plan: InferencePlan, rbc_diameter_px: float | None,
               px_per_network_px: float) -> np.ndarray:
    """The plan's two mask rules on a class mask and its CxHxW `scores`, in the mask's own pixels:
    white cells at the frame edge (a band that is a share of the red-cell diameter, given in these
    pixels; none without one) and platelet growth (a radius in network pixels, times
    `px_per_network_px`)."""
    if rbc_diameter_px is not None:
        mask = white_cells_at_border(mask, scores, plan.wbc_border_band * rbc_diameter_px, plan.wbc_border_min_prob)
    return grow_platelets(mask, plan.platelet_grow_px * px_per_network_px)


def to_segmentation(passes: list[NetworkPass], plan: InferencePlan = DEFAULT_PLAN) -> Segmentation:
    """The scale search's final pass (the last of `passes`) on the grid, cropped to the resized
    frame, with the plan's mask rules in grid pixels."""
    final = passes[-1]
    geometry = final.prepared.geometry
    decided = final.grid()
    diameter = None if final.measured is None else final.measured * geometry.scale
    mask = mask_rules(decided.mask, decided.scores, plan, diameter, 1.0)
    rh, rw = geometry.resized_hw
    centres = final.heat[0, :rh, :rw] if final.heat is not None else None  # a view: counting only reads it
    return Segmentation(mask=mask, centres=centres, scale=final.decision, rbc_diameter_px=final.measured,
                        passes=sum(p.runs for p in passes), geometry=geometry,
                        class_prob=class_probability(decided, mask), scores=decided.scores, plan=plan)


def class_probability(decided: GridClasses, mask: np.ndarray) -> np.ndarray:
    """hxw softmax probability of `mask`'s class at each pixel: the pass's top-class probability,
    taken again only where the plan's rules changed the class."""
    ys, xs, _ = pixel_coordinates(mask != decided.mask)
    if ys.size == 0:
        return decided.top_prob
    scores = decided.scores[:, ys, xs].astype(np.float32)
    top = scores.max(axis=0)
    total = np.exp(scores - top).sum(axis=0)
    chosen = np.take_along_axis(scores, mask[ys, xs][None].astype(np.intp), axis=0)[0]
    prob = decided.top_prob.copy()
    prob[ys, xs] = np.exp(chosen - top) / total
    return prob


def segment_frame(network: Network, frame: np.ndarray, um_per_px: float | None = None) -> Segmentation:
    """Segment a frame; without a µm/px calibration, find the red-cell size with the network itself
    (first pass at decide_scale's decision, then search_scale's passes)."""
    first = network.predict(network.prepare(frame, network.decide_scale(frame, um_per_px)))
    return to_segmentation(search_scale(network, frame, first), network.plan)


def find_segmentation_cells(seg: Segmentation, rules: CountRules = DEFAULT_RULES,
                            um_per_px: float | None = None) -> FoundCells:
    """find_cells on the grid with the segmentation's centre heat-map, class probabilities,
    measured red-cell size and its model's white-cell confidence floor; the records are in frame
    coordinates (`um_per_px`: the frame's)."""
    return find_cells(seg.mask, seg.centres, class_prob=seg.class_prob, rbc_diameter_px=seg.grid_rbc_diameter_px,
                      rules=grid_rules(rules, seg.geometry), um_per_px=um_per_px, geometry=seg.geometry,
                      wbc_min_confidence=seg.plan.wbc_min_confidence)


def grid_rules(rules: CountRules, geometry: Geometry) -> CountRules:
    """`rules` for a mask on the grid: the one length in pixels (the red-cell diameter assumed when
    a mask has no red cell) converted from frame pixels; every other rule is relative to it."""
    return dataclasses.replace(rules, default_rbc_diameter_px=rules.default_rbc_diameter_px * geometry.scale)


def count_segmentation(seg: Segmentation, rules: CountRules = DEFAULT_RULES) -> dict[str, int]:
    """The counts of find_segmentation_cells (the number of instances per class)."""
    return find_segmentation_cells(seg, rules).cells.counts


def analyse_frame(network: Network, frame: np.ndarray, um_per_px: float | None = None,
                  rules: CountRules = DEFAULT_RULES) -> tuple[Segmentation, dict[str, int]]:
    """segment_frame + count_cells with the measured red-cell size: what a device reports per frame."""
    seg = segment_frame(network, frame, um_per_px)
    return seg, count_segmentation(seg, rules)
