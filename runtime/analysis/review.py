"""Whether a person should look at a field before its numbers are used: the result's `review` object.

Each reason names something the analysis cannot vouch for on its own: a white cell the network was
unsure of (a white-cell count of 0, 1 or 2 decides a differential), a scale estimated from the frame
instead of a calibration, a frame the quality gate rejected or nearly rejected, counts no smear
shows, a cell list cut at its cap, and an HbA1c the diagnosis set aside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from runtime.analysis.cells import CellTable
from runtime.analysis.quality import QualityReport
from runtime.contracts.config import QualityConfig

if TYPE_CHECKING:
    from runtime.analysis.analyzer import FrameAnalysis


@dataclass(frozen=True)
class ReviewRules:
    """When a field is sent for review."""

    min_wbc_confidence: float = 0.8
    """A white cell whose mean white-cell probability is under this is doubtful. On the 1,008
    TXL-PBC train images (int8 model, version 3) 12 of the 49 white-cell instances that matched no
    labelled white cell at IoU >= 0.5 fall under 0.8, and 5 of the 1,029 matched ones: a review
    flag that is rarely raised and, when raised, more often right than not."""
    quality_margin: float = 0.2
    """A measurement within this fraction of a quality threshold (on the accepted side) is borderline."""
    max_wbc_per_rbc: float = 0.5
    """More white cells than this per red cell (with more than `max_wbc_alone` white cells) is no
    blood smear: a stain artefact or a misread frame."""
    max_wbc_alone: int = 3
    max_platelet_per_rbc: float = 1.0
    """More platelets than red cells (with at least `min_cells_for_ratios` cells) is implausible."""
    min_cells_for_ratios: int = 10


DEFAULT_REVIEW = ReviewRules()


def _reason(code: str, detail: str) -> dict[str, str]:
    return {"code": code, "detail": detail[:300]}


def review(quality: QualityReport, cells: CellTable, *, scale_source: str, capped: bool,
           diagnosis: Mapping[str, Any] | None, quality_config: QualityConfig | None = None,
           rules: ReviewRules = DEFAULT_REVIEW) -> dict[str, Any]:
    """The `review` object: `needed` and the reasons (empty when none)."""
    reasons: list[dict[str, str]] = []
    qc = quality_config or QualityConfig()
    counts = cells.counts
    if not quality.accepted:
        reasons.append(_reason("quality_rejected", "; ".join(quality.reasons) or "rejected by the quality gate"))
    else:
        near = []
        if quality.focus < qc.min_focus * (1 + rules.quality_margin):
            near.append(f"focus {quality.focus:.1f} near the minimum {qc.min_focus:g}")
        if quality.cell_coverage < qc.min_cell_coverage * (1 + rules.quality_margin):
            near.append(f"cell coverage {100 * quality.cell_coverage:.1f}% near the minimum {100 * qc.min_cell_coverage:.1f}%")
        if quality.brightness > qc.max_brightness * (1 - rules.quality_margin / 4):
            near.append(f"brightness {quality.brightness:.0f} near the maximum {qc.max_brightness:g}")
        if quality.brightness < qc.min_brightness * (1 + rules.quality_margin):
            near.append(f"brightness {quality.brightness:.0f} near the minimum {qc.min_brightness:g}")
        if near:
            reasons.append(_reason("quality_borderline", "; ".join(near)))
        if len(cells) == 0:
            reasons.append(_reason("no_cells", "no cell found in an accepted frame"))
    doubtful = [c for c in cells.by_class.get("wbc", ()) if c.confidence < rules.min_wbc_confidence]
    if doubtful:
        listed = ", ".join(f"#{c.number} ({c.confidence:.2f})" for c in doubtful[:8])
        reasons.append(_reason("low_confidence_wbc",
                               f"white cell {listed} under confidence {rules.min_wbc_confidence:g}"))
    if scale_source != "calibration":
        reasons.append(_reason("scale_estimated", f"scale {scale_source} from the frame, no µm/px calibration"))
    rbc, wbc, plt = counts["rbc"], counts["wbc"], counts["platelet"]
    implausible = []
    if wbc > rules.max_wbc_alone and wbc > rules.max_wbc_per_rbc * rbc:
        implausible.append(f"{wbc} white cells beside {rbc} red cells")
    if rbc + plt >= rules.min_cells_for_ratios and plt > rules.max_platelet_per_rbc * rbc:
        implausible.append(f"{plt} platelets beside {rbc} red cells")
    if implausible:
        reasons.append(_reason("counts_implausible", "; ".join(implausible)))
    if capped:
        reasons.append(_reason("cells_capped", f"{len(cells)} cells found; the result lists only the first ones"))
    hba1c = (diagnosis or {}).get("hba1c_excluded")
    if (hba1c.get("excluded") if isinstance(hba1c, Mapping) else bool(hba1c)):
        why = "; ".join(hba1c.get("reasons", [])) if isinstance(hba1c, Mapping) else ""
        reasons.append(_reason("hba1c_set_aside", "the diagnosis set the HbA1c aside" + (f": {why}" if why else "")))
    return {"needed": bool(reasons), "reasons": reasons}


def review_analysis(analysis: "FrameAnalysis", capped: bool = False) -> dict[str, Any]:
    """`review` of one frame's analysis (which must carry its cells)."""
    if analysis.cells is None:
        raise ValueError("review needs the analysis's cells")
    return review(analysis.quality, analysis.cells, scale_source=analysis.scale.source, capped=capped,
                  diagnosis=analysis.diagnosis)
