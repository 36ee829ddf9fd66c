"""Sample context: CLI labs, worklists (CSV/JSON), pseudonymous patient ids, fields and per-sample summaries."""

from __future__ import annotations

import json

import pytest

from runtime.contracts.config import SampleConfig
from runtime.contracts.errors import ConfigError, DataError
from runtime.contracts.sample import (
    SampleContext,
    SampleSummary,
    SampleTracker,
    parse_lab_options,
    pseudonymize,
    read_worklist,
)


def test_lab_options():
    assert parse_lab_options(["fpg_mmol_l=6.1", "sex=F", "symptoms=true"]) == {
        "fpg_mmol_l": 6.1, "sex": "F", "symptoms": True}
    with pytest.raises(ConfigError, match=r"--lab 'fpg': expected NAME=VALUE"):
        parse_lab_options(["fpg"])


def test_pseudonyms_are_keyed_and_stable():
    a = pseudonymize("MRN-0042", b"site-a")
    assert a == pseudonymize(" MRN-0042 ", b"site-a") and a.startswith("p-") and "0042" not in a
    assert a != pseudonymize("MRN-0042", b"site-b")


def test_csv_worklist_hashes_patients_and_reads_labs(tmp_path):
    path = tmp_path / "worklist.csv"
    path.write_text("sample_id,patient_id,fields,fpg_mmol_l,hba1c_pct,sex\n"
                    "S-1,MRN-1,2,7.1,6.6,F\nS-2,,1,,5.2,M\n")
    samples = read_worklist(path, secret=b"k")
    assert [s.sample_id for s in samples] == ["S-1", "S-2"]
    assert samples[0].patient_id == pseudonymize("MRN-1", b"k") and samples[1].patient_id is None
    assert samples[0].labs == {"fpg_mmol_l": 7.1, "hba1c_pct": 6.6, "sex": "F"} and samples[0].fields == 2
    assert samples[1].labs == {"hba1c_pct": 5.2, "sex": "M"}


@pytest.mark.parametrize(("name", "text", "message"), [
    ("w.csv", "patient_id\nP1\n", "needs a header row with a sample_id column"),
    ("w.csv", "sample_id,fields\nS-1,zero\n", "entry 1"),
    ("w.csv", "sample_id\n", "has no samples"),
    ("w.json", "{\"sample_id\": 1}", "is a list of objects"),
    ("w.json", "[{\"sample_id\": \"S\", \"lab\": {}}]", "entry 1: unknown key"),
    ("w.json", "[oops", "not valid JSON"),
])
def test_bad_worklists_name_file_and_entry(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_worklist(path)


def test_tracker_moves_through_the_worklist_then_keeps_the_last_sample(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps([{"sample_id": "A", "fields": 2, "labs": {"fpg_mmol_l": 5.0}},
                                {"sample_id": "B", "patient_id": "P", "fields": 1}]))
    tracker = SampleTracker.from_config(SampleConfig(worklist=str(path)))
    placed = [tracker.next_field() for _ in range(4)]
    assert [(p.context.sample_id, p.field_index) for p in placed] == [("A", 0), ("A", 1), ("B", 0), ("B", 1)]
    tracker.set_current(SampleContext("C", fields=1))
    assert (tracker.next_field().context.sample_id, tracker.current.sample_id) == ("C", "C")


def test_tracker_without_sample_makes_automatic_ids_per_group():
    tracker = SampleTracker.from_config(SampleConfig(fields_per_sample=2))
    ids = [tracker.next_field().context.sample_id for _ in range(4)]
    assert ids[0] == ids[1] != ids[2] == ids[3] and ids[0].startswith("auto-")


def test_secret_from_environment(monkeypatch):
    config = SampleConfig(sample_id="S", patient_id="Jane Roe", pseudonym_secret_env="SITE_SECRET")
    with pytest.raises(ConfigError, match="SITE_SECRET is not set"):
        SampleTracker.from_config(config)
    monkeypatch.setenv("SITE_SECRET", "s3cret")
    assert SampleTracker.from_config(config).current.patient_id == pseudonymize("Jane Roe", b"s3cret")


def _result(accepted, rbc, wbc=1, rbc_area=30.0, density=None):
    return {"quality": {"accepted": accepted, "reasons": [] if accepted else ["out of focus: 3 < 30"]},
            "counts": {"rbc": rbc, "wbc": wbc, "platelet": 2},
            "area_pct": {"background": 100 - rbc_area - 1, "rbc": rbc_area, "wbc": 1.0, "platelet": 0.0},
            "derived": {"field_area_mm2": rbc / density, "density_per_mm2": {"rbc": density, "wbc": 10.0, "platelet": 20.0},
                        "mean_cell_area_um2": {"rbc": 40.0 + rbc / 10, "wbc": None, "platelet": 5.0}}
            if density else None}


def test_summary_over_fields_counts_only_accepted_ones():
    summary = SampleSummary("S")
    summary.add(_result(True, 100, rbc_area=30.0, density=5000.0))
    summary.add(_result(False, 0, rbc_area=0.0))
    summary.add(_result(True, 120, wbc=3, rbc_area=34.0, density=6000.0))
    data = summary.to_dict()
    assert (data["fields"], data["accepted_fields"]) == (3, 2)
    assert data["total_counts"] == {"rbc": 220, "wbc": 4, "platelet": 4}
    assert data["mean_counts_per_field"]["rbc"] == 110.0
    assert data["mean_area_pct"]["rbc"] == 32.0
    assert data["mean_density_per_mm2"]["rbc"] == 5500.0
    assert data["mean_field_area_mm2"] == pytest.approx((100 / 5000 + 120 / 6000) / 2)
    assert data["mean_rbc_area_um2"] == 51.0
    assert data["rejected_reasons"] == ["out of focus: 3 < 30"]
