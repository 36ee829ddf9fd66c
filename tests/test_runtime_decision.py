"""The diagnosis adapter: lab values plus the sample's smear so far, under the diagnosis package's names."""

from __future__ import annotations

import math

import pytest

from runtime.diagnosis.decision import GuidelineDiagnoser, smear_values
from runtime.contracts.ids import uuid7
from runtime.contracts.sample import SampleContext, SampleField, SampleSummary
from runtime.contracts.schema import validate

AREA = {"background": 60.0, "rbc": 38.0, "wbc": 1.5, "platelet": 0.5}


def _summary(fields: int, rbc: int = 100) -> SampleSummary:
    summary = SampleSummary("S")
    for i in range(fields):
        derived = {"field_area_mm2": 0.012, "density_per_mm2": {"rbc": rbc / 0.012, "wbc": 1.0, "platelet": 1.0},
                   "mean_cell_area_um2": {"rbc": 40.0 + 2 * i, "wbc": None, "platelet": None}}
        summary.add_field(True, [], {"rbc": rbc + 10 * i, "wbc": 2, "platelet": 5}, AREA, derived)
    summary.add_field(False, ["out of focus"], {"rbc": 0, "wbc": 0, "platelet": 0}, AREA, None)
    return summary


def test_smear_values_are_means_over_accepted_fields():
    values = smear_values(_summary(3))
    assert values["smear_fields"] == 3.0
    assert values["rbc_per_field"] == 110.0 and values["rbc_area_pct"] == 38.0
    assert values["field_area_um2"] == pytest.approx(12000.0)
    assert values["mean_rbc_diameter_um"] == pytest.approx(2 * math.sqrt(42.0 / math.pi), abs=1e-3)
    assert smear_values(SampleSummary("empty")) == {}


def test_diagnosis_needs_lab_values_and_fits_the_result_schema():
    diagnoser = GuidelineDiagnoser("ada")
    assert diagnoser(SampleField(SampleContext("S"), 0), _summary(1)) is None
    placed = SampleField(SampleContext("S", "p-1", {"fpg_mmol_l": 7.4, "hba1c_pct": 6.8}), 0)
    diagnosis = diagnoser(placed, _summary(6))
    assert diagnosis["guideline"] == "ada" and diagnosis["status"] == "diabetes" and diagnosis["criteria"]
    validate({"schema": "result/1", "result_id": uuid7(), "device_id": "d", "seq": 0,
              "created_at": "2026-11-25T12:00:00Z", "sample": placed.to_dict(),
              "model": {"name": "m", "version": "1", "sha256": "0" * 64}, "quality": {"accepted": True},
              "counts": {"rbc": 1, "wbc": 0, "platelet": 0}, "area_pct": AREA, "timings_ms": {},
              "diagnosis": diagnosis})


def test_unusable_lab_values_become_an_indeterminate_diagnosis():
    from runtime.contracts.plausible import ImplausibleValue

    with pytest.raises(ImplausibleValue, match="fpg_mmol_l: fpg -3 mmol/L is not plausible"):
        SampleContext("S", None, {"fpg_mmol_l": -3.0})  # refused at the door: worklist, --lab, order
    placed = SampleField(SampleContext("S", None, {"fpg_mmol_l": 6.0, "sex": "X"}), 0)
    diagnosis = GuidelineDiagnoser("who")(placed, _summary(1))
    assert diagnosis["status"] == "indeterminate"
    assert "sex" in diagnosis["flags"][0]
