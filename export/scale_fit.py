"""Fit a model's inference plan on labelled training frames at their labelled scale (never val).

- Red-cell size: without a µm/px calibration the device sets the scale from the red-cell size
  measured on the network's own mask (runtime.analysis.scale_search.search_scale). Each model draws cells a
  little larger or smaller than the boxes it was trained on, so a raw measurement would settle
  every frame at a slightly wrong scale: the ratio measured/labelled goes into the card's
  `inference` section and the runtime divides by it.
- Platelet growth: platelets are a few network pixels across, and a model may draw them a pixel
  small; the growth (in grid pixels) that gives the best pooled platelet Dice on the same frames
  goes into the plan too (runtime.analysis.scale_search.grow_platelets).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from runtime.contracts.errors import DataError
from runtime.analysis.scale_search import grow_platelets
from runtime.contracts.card_sections import InferencePlan
from runtime.inference.passes import FunctionNetwork, Run
from runtime.inference.preprocess import PreprocessParams, preprocess, scores_to_frame
from training.datasets import Sample
from training.metrics import ConfusionMeter

GROW_GRID_PX: tuple[float, ...] = (0.0, 1.0, 1.5, 2.0)
"""Platelet growths tried (network-grid pixels). Cells are counted on the grid, where a radius
below one pixel grows nothing and each of these adds a ring (4-neighbours, 8-neighbours, the next
axis pixels): a fraction of a pixel would raise the frame-size mask's Dice, where it acts, while
the counted platelets stayed as they were."""


def fit_inference(runs: Mapping[str, Run], params: PreprocessParams, frames: Iterable[Sample], *,
                  flip_average: bool = False, grow_grid: tuple[float, ...] = GROW_GRID_PX) -> dict[str, dict[str, Any]]:
    """For each named model, over `frames` (read once), each run at its labelled scale (the box
    size, or the nominal red cell at the calibrated µm/px, as runtime.inference.preprocess.decide_scale turns
    it into a diameter) and flip-averaged as the plan will be:
    - `measured_diameter_ratio`: the median of (diameter measured on its mask) / (labelled
      diameter), with the spread, so a card shows how far one frame may stray;
    - `platelet_grow_px`: the growth of `grow_grid` with the best pooled platelet Dice against the
      frames' masks (0 when no frame has a platelet), with the Dice of each."""
    ratios: dict[str, list[float]] = {name: [] for name in runs}
    meters = {name: [ConfusionMeter() for _ in grow_grid] for name in runs}  # one per growth
    for sample in frames:
        if not (sample.um_per_px or sample.rbc_diameter_px):
            continue  # no labelled scale: the preprocessing would estimate one
        prepared = preprocess(sample.image, params, source=sample.key or "frame", **sample.scale_kwargs())
        truth = prepared.scale.rbc_diameter_px
        for name, run in runs.items():
            network = FunctionNetwork(run, params)
            result = network.predict(prepared)
            if result.measured is not None:
                ratios[name].append(result.measured / truth)
            if flip_average:
                result = network.flip_averaged(result)
            mask = scores_to_frame(result.logits, prepared.geometry).argmax(axis=0).astype(np.uint8)
            for meter, grow in zip(meters[name], grow_grid):
                meter.update(grow_platelets(mask, grow / prepared.geometry.scale), sample.mask)
    fits = {}
    for name, values in ratios.items():
        if not values:
            raise DataError(f"scale fit ({name}): no frame with a labelled red-cell size and red cells in the mask")
        arr = np.asarray(values)
        ratio = float(np.clip(np.median(arr), 0.5, 2.0))
        dice = [meter.scores()["platelet"]["dice"] or 0.0 for meter in meters[name]]
        best = int(np.argmax(dice))  # all 0 without a platelet: no growth
        fits[name] = {"measured_diameter_ratio": round(ratio, 4), "frames": int(arr.size),
                      "mean_abs_deviation": round(float(np.mean(np.abs(arr / ratio - 1.0))), 4),
                      "platelet_grow_px": float(grow_grid[best]),
                      "platelet_dice_by_grow_px": {f"{g:g}": round(float(d), 4) for g, d in zip(grow_grid, dice)}}
    return fits


def fitted_plan(fit: dict[str, Any] | None, *, flip_average: bool) -> InferencePlan:
    """The plan a card records: the fitted ratio and platelet growth (1.0 and 0 without a fit) and
    the flip-averaging choice."""
    if not fit:
        return InferencePlan(flip_average=flip_average)
    return InferencePlan(measured_diameter_ratio=fit["measured_diameter_ratio"], flip_average=flip_average,
                         platelet_grow_px=fit.get("platelet_grow_px", 0.0))
