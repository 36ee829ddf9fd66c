"""Fit a model's inference plan: how large its masks draw red cells, on frames of known scale.

Without a µm/px calibration the device sets the scale from the red-cell size measured on the
network's own mask (runtime.postprocess.search_scale). Each model draws cells a little larger or
smaller than the boxes it was trained on, so a raw measurement would settle every frame at a
slightly wrong scale. The ratio measured/labelled, taken at the labelled scale on training frames
(never val), goes into the card's `inference` section and the runtime divides by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from runtime.errors import DataError
from runtime.postprocess import InferencePlan, Run, run_pass
from runtime.preprocess import PreprocessParams, preprocess
from training.datasets import Sample


def fit_measured_diameter_ratio(runs: Mapping[str, Run], params: PreprocessParams,
                                frames: Iterable[Sample]) -> dict[str, dict[str, Any]]:
    """For each named model: the median of (diameter measured on its mask) / (labelled diameter)
    over `frames` (read once), each run at its labelled scale (the box size, or the nominal red
    cell at the calibrated µm/px, as runtime.preprocess.decide_scale turns it into a diameter),
    with the spread, so a card shows how far one frame may stray."""
    ratios: dict[str, list[float]] = {name: [] for name in runs}
    for sample in frames:
        if not (sample.um_per_px or sample.rbc_diameter_px):
            continue  # no labelled scale: the preprocessing would estimate one
        prepared = preprocess(sample.image, params, source=sample.key or "frame", **sample.scale_kwargs())
        truth = prepared.scale.rbc_diameter_px
        for name, run in runs.items():
            measured = run_pass(run, prepared).measured
            if measured is not None:
                ratios[name].append(measured / truth)
    fits = {}
    for name, values in ratios.items():
        if not values:
            raise DataError(f"scale fit ({name}): no frame with a labelled red-cell size and red cells in the mask")
        arr = np.asarray(values)
        ratio = float(np.clip(np.median(arr), 0.5, 2.0))
        fits[name] = {"measured_diameter_ratio": round(ratio, 4), "frames": int(arr.size),
                      "mean_abs_deviation": round(float(np.mean(np.abs(arr / ratio - 1.0))), 4)}
    return fits


def fitted_plan(fit: dict[str, Any] | None, *, flip_average: bool) -> InferencePlan:
    """The plan a card records: the fitted ratio (1.0 without a fit) and the flip-averaging choice."""
    ratio = fit["measured_diameter_ratio"] if fit else 1.0
    return InferencePlan(measured_diameter_ratio=ratio, flip_average=flip_average)
