"""What the smear can say about the red cells, and how little.

HbA1c depends on red-cell lifespan, so anaemia and abnormal red cells make it unreliable. A
segmentation of one stained field gives counts and covered area; with a µm/px calibration it also
gives cell diameters and a density per area. Those are screening signals only: they depend on where
in the smear the field lies, on smear thickness and on staining, and none of them measures
haemoglobin. The rule (reference ranges in tables.SMEAR_RANGES) is documented in docs/diagnosis.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from runtime.diagnosis.inputs import (
    SMEAR_FIELDS, InvalidInputs, bounds_text, out_of_bounds, parse_float, is_blank,
)
from runtime.diagnosis.tables import SMEAR_MIN_FIELDS, SMEAR_RANGES
from runtime.diagnosis.units import InputError


@dataclass(frozen=True)
class SmearFindings:
    """Per-field averages from the device's segmentation (over `fields` fields of the monolayer).

    rbc/wbc/platelet_per_field: mean cell counts per field; rbc_area_pct: % of the field covered by
    red cells; field_area_um2, mean_rbc_diameter_um, rbc_diameter_cv_pct: only with a calibration.
    """

    rbc_per_field: float | None = None
    wbc_per_field: float | None = None
    platelet_per_field: float | None = None
    rbc_area_pct: float | None = None
    field_area_um2: float | None = None
    mean_rbc_diameter_um: float | None = None
    rbc_diameter_cv_pct: float | None = None
    fields: int = 1

    @property
    def rbc_per_10000_um2(self) -> float | None:
        """Red-cell density, only when the field area is known from a calibration."""
        if self.rbc_per_field is None or not self.field_area_um2:
            return None
        return self.rbc_per_field / self.field_area_um2 * 1e4

    def measure(self, name: str) -> float | None:
        return getattr(self, name)

    def is_empty(self) -> bool:
        return all(getattr(self, n) is None for n in
                   ("rbc_per_field", "wbc_per_field", "platelet_per_field", "rbc_area_pct",
                    "mean_rbc_diameter_um", "rbc_diameter_cv_pct"))


@dataclass(frozen=True)
class RedCellAssessment:
    """`findings`: reasons the smear suggests anaemia or abnormal red cells; `notes`: what could
    not be judged and why."""

    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def suggests_abnormal(self) -> bool:
        return bool(self.findings)


def assess_red_cells(smear: SmearFindings | None) -> RedCellAssessment:
    """Walk SMEAR_RANGES; a measure outside its range is a finding. Nothing is judged from fewer
    than SMEAR_MIN_FIELDS fields (a note says so), whichever measure it is."""
    if smear is None or smear.is_empty():
        return RedCellAssessment()
    findings: list[str] = []
    notes: list[str] = []
    present = [rng for rng in SMEAR_RANGES if smear.measure(rng.measure) is not None]
    plural = "s" if smear.fields != 1 else ""
    if present and smear.fields < SMEAR_MIN_FIELDS:
        notes.append(f"smear: {', '.join(r.measure for r in present)} not judged: {smear.fields} field{plural} "
                     f"averaged, needs at least {SMEAR_MIN_FIELDS}")
        return RedCellAssessment(findings, notes)
    for rng in present:
        value = smear.measure(rng.measure)
        low = rng.low is not None and value < rng.low
        high = rng.high is not None and value > rng.high
        if low or high:
            ref = f"{'' if rng.low is None else f'{rng.low:g}'}-{'' if rng.high is None else f'{rng.high:g}'}"
            findings.append(f"smear: {rng.finding}: {rng.measure} {value:.3g} {rng.unit} outside {ref} "
                            f"(over {smear.fields} field{plural})")
    if not present:
        notes.append("smear: cell counts per field without a µm/px calibration or red-cell area "
                     "cannot indicate anaemia; red cells not judged")
    return RedCellAssessment(findings, notes)


def smear_from_mapping(values: Mapping[str, Any]) -> SmearFindings | None:
    """SmearFindings from the batch column names (rbc_per_field, ...), or None when none is given."""
    kwargs: dict[str, Any] = {}
    errors: list[InputError] = []
    for name, (low, high, inclusive) in SMEAR_FIELDS.items():
        raw = values.get(name)
        if is_blank(raw):
            continue
        try:
            value = parse_float(name, raw)
            if out_of_bounds(value, low, high, inclusive):
                raise InputError(name, f"impossible value {value:g} (must be {bounds_text(low, high, inclusive)})")
        except InputError as exc:
            errors.append(exc)
            continue
        kwargs["fields" if name == "smear_fields" else name] = int(value) if name == "smear_fields" else value
    if errors:
        raise InvalidInputs(errors)
    if not kwargs:
        return None
    return SmearFindings(**kwargs)
