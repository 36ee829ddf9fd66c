"""The scale search: run the network at the scale where red cells look as it learnt them.

A frame's red-cell size is unknown without a calibration, so the network itself measures it:
a first pass at the classical guess, passes at the plan's other candidate scales, refinements
from the size measured on the most confident pass (see `search_scale`). The final pass is then
mapped to the frame's own size (`to_segmentation`) with the plan's two mask rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from runtime.analysis.counting import DEFAULT_RULES, CountRules, FoundCells, find_cells
from runtime.contracts.card_sections import InferencePlan, PreprocessParams
from runtime.contracts.classes import BACKGROUND, PLATELET, WBC
from runtime.inference.passes import DEFAULT_PLAN, Network, NetworkPass
from runtime.inference.preprocess import ScaleDecision, scores_to_frame


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
    class_prob: np.ndarray | None = None
    """HxW float32: the network's probability of each pixel's class in `mask` (softmax of the
    final pass at the frame's size), from which each cell's confidence is taken."""


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
    size moves by more than `tolerance`. A calibrated frame, or one
    with no estimate, runs once.
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
    return network.flip_averaged(chosen) if network.plan.flip_average else chosen


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
                        passes=sum(p.runs for p in passes), class_prob=class_probability(scores, mask))


def class_probability(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """HxW softmax probability of `mask`'s class at each pixel, from CxHxW scores."""
    scores = scores.astype(np.float32, copy=False)
    top = scores.max(axis=0)
    total = np.exp(scores - top).sum(axis=0)
    chosen = np.take_along_axis(scores, mask[None].astype(np.intp), axis=0)[0]
    return (np.exp(chosen - top) / total).astype(np.float32)


def segment_frame(network: Network, frame: np.ndarray, um_per_px: float | None = None) -> Segmentation:
    """Segment a frame; without a µm/px calibration, find the red-cell size with the network itself
    (first pass at decide_scale's decision, then search_scale's passes)."""
    first = network.predict(network.prepare(frame, network.decide_scale(frame, um_per_px)))
    return to_segmentation(search_scale(network, frame, first), network.plan)


def find_segmentation_cells(seg: Segmentation, rules: CountRules = DEFAULT_RULES,
                            um_per_px: float | None = None) -> FoundCells:
    """find_cells with the segmentation's centre heat-map, class probabilities and measured red-cell size."""
    return find_cells(seg.mask, seg.centres, class_prob=seg.class_prob, rbc_diameter_px=seg.rbc_diameter_px,
                      rules=rules, um_per_px=um_per_px)


def count_segmentation(seg: Segmentation, rules: CountRules = DEFAULT_RULES) -> dict[str, int]:
    """The counts of find_segmentation_cells (the number of instances per class)."""
    return find_segmentation_cells(seg, rules).cells.counts


def analyse_frame(network: Network, frame: np.ndarray, um_per_px: float | None = None,
                  rules: CountRules = DEFAULT_RULES) -> tuple[Segmentation, dict[str, int]]:
    """segment_frame + count_cells with the measured red-cell size: what a device reports per frame."""
    seg = segment_frame(network, frame, um_per_px)
    return seg, count_segmentation(seg, rules)
