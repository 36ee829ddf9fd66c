"""`smearscope diagnose`: single-patient text and JSON, batch CSV with bad rows, clear errors."""

from __future__ import annotations

import csv
import json

import pytest

from smearscope.cli import cli
from smearscope.cli.diagnose import ADDED_COLUMNS, PATIENT_OPTIONS, TEST_OPTIONS

BATCH_COLUMNS = ("age sex bmi pregnant pregnancies fpg_mmol_l fpg_mg_dl ogtt_1h_mmol_l ogtt_2h_mmol_l "
                 "ogtt_2h_mg_dl hba1c_pct hba1c_mmol_mol random_glucose_mmol_l random_glucose_mg_dl symptoms "
                 "diastolic_bp_mmhg triceps_skinfold_mm insulin_2h_uu_ml diabetes_pedigree urea_mmol_l "
                 "creatinine_umol_l cholesterol_mmol_l triglycerides_mmol_l hdl_mmol_l ldl_mmol_l vldl_mmol_l "
                 "c_peptide_pmol_l gad_positive rbc_per_field wbc_per_field platelet_per_field").split()


def test_every_batch_column_is_an_input_and_has_an_option():
    from runtime.diagnosis.inputs import classify_column

    options = {col for _o, col, _h in TEST_OPTIONS + PATIENT_OPTIONS}
    for col in BATCH_COLUMNS:
        assert classify_column(col) != "other", col
        base = next((t for _o, t, _h in TEST_OPTIONS if col.startswith(t + "_")), col)
        assert base in options, col


def test_single_patient_json(cli_runner):
    result = cli_runner.invoke(cli, ["diagnose", "--fpg", "126 mg/dL", "--hba1c", "6.7", "--age", "52",
                                     "--bmi", "32", "--sex", "M", "--guideline", "who", "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    for key in ("guideline", "status", "confirmation_needed", "criteria", "hba1c_excluded", "type",
                "probabilities", "followup"):
        assert key in d
    assert d["guideline"] == "who" and d["status"] == "diabetes" and d["confirmation_needed"] is False
    assert {c["test"] for c in d["criteria"]} == {"fpg", "hba1c"}
    assert d["criteria"][0]["unit"] == "mg/dL" and d["criteria"][0]["threshold"] == 126
    assert set(d["probabilities"]) == {"p_normal", "p_prediabetes", "p_diabetes"}
    assert all(f["citation"] for f in d["followup"])


def test_single_patient_text_and_default_units(cli_runner):
    result = cli_runner.invoke(cli, ["diagnose", "--fpg", "6.3", "--glucose-unit", "mmol/L", "--no-model"])
    assert result.exit_code == 0, result.output
    assert "status: prediabetes (IFG (prediabetes))" in result.output and "follow-up:" in result.output
    mgdl = cli_runner.invoke(cli, ["diagnose", "--fpg", "126", "--glucose-unit", "mg/dL", "--no-model", "--json"])
    assert json.loads(mgdl.output)["status"] == "diabetes"
    mmol_mol = cli_runner.invoke(cli, ["diagnose", "--hba1c", "48", "--hba1c-unit", "mmol/mol", "--no-model", "--json"])
    assert json.loads(mmol_mol.output)["criteria"][0]["unit"] == "mmol/mol"


@pytest.mark.parametrize("args,needle", [
    (["--fpg", "7 g/L"], "--fpg: unknown unit 'g/L'"),
    (["--fpg", "0"], "--fpg: fpg 0 mmol/L is not plausible"),
    (["--fpg", "7", "--glucose-unit", "mg/dL"], "did you mean 7 mmol/L?"),
    (["--hba1c", "26"], "--hba1c: hba1c 26 % is not plausible (expected 3-25 %): did you mean 26 mmol/mol?"),
    (["--age", "-1", "--fpg", "5"], "--age: age -1 years is not plausible"),
    (["--bmi", "heavy", "--fpg", "5"], "--bmi: not a number"),
    (["--fpg", "5", "--glucose-unit", "mg/ml"], "unknown unit 'mg/ml'"),
    ([], "give at least one input"),
])
def test_single_patient_errors_name_the_option(cli_runner, args, needle):
    result = cli_runner.invoke(cli, ["diagnose", "--no-model", *args])
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def _write(path, header, rows):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def test_batch_keeps_columns_adds_results_and_reports_bad_rows(cli_runner, tmp_path):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    header = ["patient_ref"] + BATCH_COLUMNS
    blank = {c: "" for c in header}
    rows = [
        {**blank, "patient_ref": "a", "age": "50", "sex": "M", "bmi": "31", "fpg_mg_dl": "126", "hba1c_pct": "6.8"},
        {**blank, "patient_ref": "b", "fpg_mmol_l": "abc"},
        {**blank, "patient_ref": "c", "pregnant": "1", "sex": "F", "ogtt_2h_mmol_l": "9.0", "hba1c_pct": "6.0"},
        {**blank, "patient_ref": "d", "hba1c_pct": "30", "age": "-4"},
        {**blank, "patient_ref": "e", "random_glucose_mmol_l": "13", "symptoms": "0"},
        {**blank, "patient_ref": "f", "fpg_mmol_l": "5.9", "rbc_per_field": "210", "wbc_per_field": "1"},
    ]
    _write(src, header, [[r[c] for c in header] for r in rows])
    result = cli_runner.invoke(cli, ["diagnose", "--batch", str(src), "--out", str(out)])
    assert result.exit_code == 1, result.output
    with out.open() as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == header + list(ADDED_COLUMNS)
        got = list(reader)
    assert [r["guideline_status"] for r in got] == ["diabetes", "", "gestational_diabetes", "", "indeterminate", "prediabetes"]
    assert [r["patient_ref"] for r in got] == ["a", "b", "c", "d", "e", "f"]
    a, b, c, d = got[0], got[1], got[2], got[3]
    assert a["confirmation_needed"] == "0" and a["hba1c_excluded"] == "0" and a["model_class"] in ("normal", "prediabetes", "diabetes")
    assert abs(sum(float(a[k]) for k in ("p_normal", "p_prediabetes", "p_diabetes")) - 1) < 1e-3
    assert "lipid profile" in a["followup"].split("; ")
    assert c["hba1c_excluded"] == "1" and "postpartum" in c["followup"]
    assert b["error"] == "column fpg_mmol_l: not a number: 'abc'"
    assert "column hba1c_pct" in d["error"] and "column age" in d["error"]
    # fasting glucose is not a network input: rules only, no probabilities for this row
    assert got[5]["error"] == "" and got[5]["p_diabetes"] == "" and got[5]["model_class"] == ""
    stderr = result.stderr if hasattr(result, "stderr") else result.output
    assert "4 of 6 rows diagnosed" in stderr and "row 2: column fpg_mmol_l" in stderr and "row 4:" in stderr


def test_batch_unknown_unit_column_is_refused(cli_runner, tmp_path):
    src = tmp_path / "in.csv"
    _write(src, ["age", "fpg_mmol_per_l"], [["40", "6.0"]])
    result = cli_runner.invoke(cli, ["diagnose", "--batch", str(src), "--out", str(tmp_path / "o.csv")])
    assert result.exit_code == 2 and "column fpg_mmol_per_l: unknown unit 'mmol_per_l'" in result.output


def test_batch_needs_out_and_no_patient_options(cli_runner, tmp_path):
    src = tmp_path / "in.csv"
    _write(src, ["fpg_mmol_l"], [["6.0"]])
    assert "needs --out" in cli_runner.invoke(cli, ["diagnose", "--batch", str(src)]).output
    r = cli_runner.invoke(cli, ["diagnose", "--batch", str(src), "--out", str(tmp_path / "o.csv"), "--fpg", "5"])
    assert r.exit_code != 0 and "--fpg" in r.output
