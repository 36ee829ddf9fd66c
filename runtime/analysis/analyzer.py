"""One frame through the pipeline: quality -> preprocess -> inference -> postprocess -> diagnosis.

Each stage is a separate method so benchmarks can time them one by one; `analyze` runs them all
and records each stage's wall time in milliseconds. Together the stages are exactly
runtime.analysis.scale_search.analyse_frame (the scale search, centre heat-map and counting that `smearscope
evaluate` measures); the quality gate judges the frame at the classical scale estimate, the result
reports the scale the search settled on. A frame the quality gate rejects yields empty
counts (all background) and the gate's reasons instead of a model output, unless the config asks
to analyse rejected frames anyway.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from runtime.contracts.classes import CELL_CLASSES, CLASS_NAMES, area_percentages, class_pixels
from runtime.contracts.config import QualityConfig
from runtime.contracts.imageio import check_frame
from runtime.analysis.cells import CellTable
from runtime.analysis.counting import FoundCells, find_cells, labels_at_frame
from runtime.analysis.scale_search import Segmentation, find_segmentation_cells, search_scale, to_segmentation
from runtime.inference.preprocess import Prepared, ScaleDecision
from runtime.analysis.quality import QualityReport, assess, implausible_segmentation
from runtime.contracts.sample import SampleField, SampleSummary
from runtime.inference.model import SegmentationModel
from runtime.inference.passes import NetworkPass


class Diagnoser(Protocol):
    """Decision support on a sample's lab values and its smear so far (every field analysed for the
    sample, this one included); returns the result's `diagnosis` object or None."""

    def __call__(self, sample: SampleField | None, smear: SampleSummary) -> dict[str, Any] | None: ...


@dataclass
class FrameAnalysis:
    """Everything one frame produced; `mask` and `labels` lie on the network grid (the resized
    frame; `frame_mask` and `frame_labels` give them at the frame's size), the cells
    are in frame pixels; `scale` is the one the analysis used (the gate's classical decision when
    the model did not run)."""

    quality: QualityReport
    scale: ScaleDecision
    mask: np.ndarray
    counts: dict[str, int]
    area_pct: dict[str, float]
    derived: dict[str, Any] | None
    diagnosis: dict[str, Any] | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    model_ran: bool = True
    cells: CellTable | None = None
    """Every counted cell (`counts` is `cells.counts`); None when a caller counted without records."""
    found: FoundCells | None = None
    """The cells behind `cells`, with their instance labels (`labels`)."""
    um_per_px: float | None = None
    segmentation: Segmentation | None = None
    """The segmentation `mask` comes from (its geometry maps the grid to the frame); None when the
    model did not run and `mask` is at the frame's own size."""

    def frame_mask(self) -> np.ndarray:
        """The class mask at the frame's size, for pictures and stored masks (Segmentation.frame_mask)."""
        return self.mask if self.segmentation is None else self.segmentation.frame_mask()

    @property
    def labels(self) -> dict[str, np.ndarray] | None:
        """The instance label images per class behind `cells` (int32, 0 = none; the size of `mask`),
        made when first asked for (overlays, crops: after the timed analysis)."""
        return None if self.found is None else self.found.labels

    def frame_labels(self) -> dict[str, np.ndarray] | None:
        """The instance labels at the frame's size (nearest upsampling), for overlays and crops."""
        if self.labels is None:
            return None
        return labels_at_frame(self.labels, None if self.segmentation is None else self.segmentation.geometry)

    def quality_dict(self) -> dict[str, Any]:
        """The result's `quality` object: measurements, reasons and how the frame was scaled."""
        data = self.quality.to_dict()
        data["scale"] = {"factor": round(self.scale.scale, 4), "source": self.scale.source,
                         "rbc_diameter_px": None if self.scale.rbc_diameter_px is None
                         else round(self.scale.rbc_diameter_px, 2)}
        data["analysed"] = self.model_ran
        return data


def derived_estimates(mask: np.ndarray, counts: Mapping[str, int], um_per_px: float | None,
                      frame_hw: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """Areas in µm² and cells per mm² of the imaged field (`frame_hw` pixels at `um_per_px`; the
    mask's own size by default, which may be the network grid: each class's area is its share of
    the mask's pixels); None without a µm/px calibration."""
    if um_per_px is None:
        return None
    h, w = frame_hw or mask.shape
    field_um2 = h * w * um_per_px * um_per_px
    hist = class_pixels(mask)
    area_um2 = {name: round(float(hist[i]) / mask.size * field_um2, 1)
                for i, name in enumerate(CLASS_NAMES) if name != "background"}
    return {
        "um_per_px": um_per_px,
        "field_area_mm2": round(field_um2 / 1e6, 6),
        "area_um2": area_um2,
        "mean_cell_area_um2": {k: round(area_um2[k] / counts[k], 1) if counts[k] else None for k in CELL_CLASSES},
        "density_per_mm2": {k: round(counts[k] / (field_um2 / 1e6), 1) for k in CELL_CLASSES},
    }


class Analyzer:
    """Runs frames through one segmentation model with one quality policy."""

    def __init__(
        self,
        model: SegmentationModel,
        quality: QualityConfig | None = None,
        diagnoser: Diagnoser | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.model = model
        self.quality_config = quality or QualityConfig()
        self.diagnoser = diagnoser
        self._clock = clock

    @classmethod
    def from_model_file(cls, path: str | Path | None = None, quality: QualityConfig | None = None,
                        diagnoser: Diagnoser | None = None) -> "Analyzer":
        """An analyser on a verified model file (default: the shipped int8 model), for callers
        outside the device (the server's uploads) that should not assemble the inference stage."""
        return cls(SegmentationModel.load(path), quality, diagnoser)

    # --- the stages, separately callable -----------------------------------------------------

    def check_quality(self, frame: np.ndarray, um_per_px: float | None = None) -> tuple[QualityReport, ScaleDecision]:
        """The classical scale decision (first guess of the scale search), and focus, exposure and
        cell coverage measured at that scale."""
        scale = self.model.decide_scale(frame, um_per_px)
        return assess(frame, self.quality_config, scale.scale), scale

    def preprocess(self, frame: np.ndarray, scale: ScaleDecision, source: str = "frame") -> Prepared:
        """The tensor of the first network pass, at the quality gate's scale."""
        return self.model.prepare(frame, scale, source=source)

    def infer(self, prepared: Prepared, frame: np.ndarray) -> list[NetworkPass]:
        """The network on `prepared`, then, unless the frame is calibrated, at the other scales of
        runtime.analysis.scale_search.search_scale (those passes' resampling is timed here too)."""
        first = self.model.predict(prepared)
        return search_scale(self.model, frame, first)

    def segment(self, passes: list[NetworkPass]) -> Segmentation:
        """The scale search's final pass -> the segmentation on the network grid (mask, centres,
        class probabilities, and the geometry back to the frame)."""
        return to_segmentation(passes, self.model.plan)

    def find_cells(self, seg: Segmentation, um_per_px: float | None = None) -> FoundCells:
        """Every cell as an instance (found on the grid, recorded in frame pixels), with the centre
        heat-map and the measured red-cell size; the counts are the instances per class (as
        runtime.analysis.scale_search.analyse_frame)."""
        return find_segmentation_cells(seg, um_per_px=um_per_px)

    def postprocess(self, passes: list[NetworkPass], um_per_px: float | None = None,
                    ) -> tuple[Segmentation, FoundCells, dict[str, float]]:
        """segment + find_cells (with the calibration, as `analyze`): the segmentation, the cells
        (their records and labels; the counts are `found.cells.counts`) and area percentages (of
        the grid's pixels, which are the frame's resampled)."""
        seg = self.segment(passes)
        return seg, self.find_cells(seg, um_per_px), area_percentages(seg.mask)

    def diagnose(self, sample: SampleField | None, smear: SampleSummary) -> dict[str, Any] | None:
        if self.diagnoser is None:
            return None
        return self.diagnoser(sample, smear)

    # --- all of them ---------------------------------------------------------------------------

    def analyze(
        self,
        frame: np.ndarray,
        *,
        um_per_px: float | None = None,
        sample: SampleField | None = None,
        history: SampleSummary | None = None,
        source: str = "frame",
    ) -> FrameAnalysis:
        """Run every stage on one frame; raises ImageError for a frame that cannot be analysed at all.

        `history` is the sample's summary so far; this field is added to it (also when rejected) and
        the diagnosis sees all of it. Without one, the diagnosis sees this field alone.
        """
        frame = check_frame(frame, source=source)
        timings: dict[str, float] = {}
        start = self._clock()

        def lap(stage: str, since: float) -> float:
            now = self._clock()
            timings[stage] = round(1000.0 * (now - since), 3)
            return now

        report, scale = self.check_quality(frame, um_per_px)
        t = lap("quality", start)
        model_ran = report.accepted or self.quality_config.analyze_rejected
        if model_ran:
            prepared = self.preprocess(frame, scale, source=source)
            t = lap("preprocess", t)
            passes = self.infer(prepared, frame)
            t = lap("inference", t)
            seg = self.segment(passes)
            found = self.find_cells(seg, um_per_px)
            t = lap("postprocess", t)
            mask, scale, segmentation = seg.mask, seg.scale, seg
            implausible = implausible_segmentation(area_percentages(mask)) if report.accepted else []
            if implausible:
                report = dataclasses.replace(report, accepted=False, reasons=(*report.reasons, *implausible))
        else:
            mask, segmentation = np.zeros(frame.shape[:2], np.uint8), None
            found = find_cells(mask, um_per_px=um_per_px)
        counts, area = found.cells.counts, area_percentages(mask)
        derived = derived_estimates(mask, counts, um_per_px, frame.shape[:2])
        if history is None:
            history = SampleSummary(sample.context.sample_id if sample else "frame")
        history.add_field(report.accepted, report.reasons, counts, area, derived)
        diagnosis = self.diagnose(sample, history)
        if self.diagnoser is not None:
            t = lap("diagnosis", t)
        timings["total"] = round(1000.0 * (self._clock() - start), 3)
        return FrameAnalysis(report, scale, mask, counts, area, derived, diagnosis, timings, model_ran,
                             cells=found.cells, found=found, um_per_px=um_per_px,
                             segmentation=segmentation)
