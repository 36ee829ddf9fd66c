"""The guideline engine: every cut-point of every table at, just below and just above it, in both
units (cases generated from runtime.diagnosis.tables), plus the published values themselves,
units, confirmation, pregnancy, HbA1c reliability, type assessment, follow-up and bad input."""

from __future__ import annotations

import pytest

from runtime.diagnosis import InvalidInputs, Measurement, PatientInputs, SmearFindings, diagnose
from runtime.diagnosis.tables import CUTPOINTS, FOLLOWUPS, GUIDELINES, HBA1C_INTERFERENCES, STATUS_RANK
from runtime.diagnosis.units import (
    MG_DL, MMOL_L, MMOL_MOL, PERCENT, hba1c_pct, mg_dl_to_mmol_l, mmol_l_to_mg_dl, mmol_mol_to_pct,
    pct_to_mmol_mol,
)

# Published values, written out from the guideline texts independently of tables.py:
# (guideline, pregnant, test, status) -> (value in mmol/L or %, value in mg/dL or mmol/mol)
PUBLISHED = {
    ("ada", False, "fpg", "prediabetes"): (5.6, 100), ("ada", False, "fpg", "diabetes"): (7.0, 126),
    ("ada", False, "ogtt_2h", "prediabetes"): (7.8, 140), ("ada", False, "ogtt_2h", "diabetes"): (11.1, 200),
    ("ada", False, "hba1c", "prediabetes"): (5.7, 39), ("ada", False, "hba1c", "diabetes"): (6.5, 48),
    ("ada", False, "random_glucose", "diabetes"): (11.1, 200),
    ("who", False, "fpg", "prediabetes"): (6.1, 110), ("who", False, "fpg", "diabetes"): (7.0, 126),
    ("who", False, "ogtt_2h", "prediabetes"): (7.8, 140), ("who", False, "ogtt_2h", "diabetes"): (11.1, 200),
    ("who", False, "hba1c", "diabetes"): (6.5, 48), ("who", False, "random_glucose", "diabetes"): (11.1, 200),
    ("nice", False, "fpg", "prediabetes"): (5.5, 99), ("nice", False, "fpg", "diabetes"): (7.0, 126),
    ("nice", False, "ogtt_2h", "diabetes"): (11.1, 200),
    ("nice", False, "hba1c", "prediabetes"): (6.0, 42), ("nice", False, "hba1c", "diabetes"): (6.5, 48),
    ("nice", False, "random_glucose", "diabetes"): (11.1, 200),
    **{k: v for g in ("who", "ada") for k, v in {
        (g, True, "fpg", "gestational_diabetes"): (5.1, 92), (g, True, "fpg", "diabetes"): (7.0, 126),
        (g, True, "ogtt_1h", "gestational_diabetes"): (10.0, 180),
        (g, True, "ogtt_2h", "gestational_diabetes"): (8.5, 153), (g, True, "ogtt_2h", "diabetes"): (11.1, 200),
        (g, True, "random_glucose", "diabetes"): (11.1, 200),
    }.items()},
    ("nice", True, "fpg", "gestational_diabetes"): (5.6, 101), ("nice", True, "fpg", "diabetes"): (7.0, 126),
    ("nice", True, "ogtt_2h", "gestational_diabetes"): (7.8, 140), ("nice", True, "ogtt_2h", "diabetes"): (11.1, 200),
}
STEP = {MMOL_L: 0.1, MG_DL: 1.0, PERCENT: 0.1, MMOL_MOL: 1.0}


def test_table_holds_exactly_the_published_cutpoints():
    table = {(c.guideline, c.pregnant, c.test, c.status): c for c in CUTPOINTS}
    assert len(table) == len(CUTPOINTS), "duplicate rows in CUTPOINTS"
    assert set(table) == set(PUBLISHED)
    for key, (si, conventional) in PUBLISHED.items():
        units = list(table[key].thresholds)
        assert table[key].thresholds[units[0]] == si and table[key].thresholds[units[1]] == conventional, key


def _patient(c, value: float, unit: str) -> PatientInputs:
    return PatientInputs(
        pregnant=c.pregnant, sex="F" if c.pregnant else None,
        symptoms=True if c.needs_symptoms else None,
        **{c.test: Measurement(value, unit)},
    )


def _expected(c, value: float, unit: str) -> str:
    """Status from the published table alone: the highest row of the same test reached."""
    reached = [s for (g, preg, t, s), pair in PUBLISHED.items()
               if (g, preg, t) == (c.guideline, c.pregnant, c.test)
               and value >= pair[0 if unit in (MMOL_L, PERCENT) else 1]]
    if c.needs_symptoms and not reached:
        return "indeterminate"  # a random glucose below the cut-point cannot exclude diabetes
    return max(reached, key=STATUS_RANK.__getitem__) if reached else "normal"


CASES = [
    pytest.param(c, unit, where, id=f"{c.guideline}-{'preg' if c.pregnant else 'adult'}-{c.test}-{c.status}-{unit}-{where}")
    for c in CUTPOINTS for unit in c.thresholds for where in ("below", "at", "above")
]


@pytest.mark.parametrize("c,unit,where", CASES)
def test_every_cutpoint_below_at_above_in_both_units(c, unit, where):
    threshold = c.thresholds[unit]
    value = round(threshold + {"below": -1, "at": 0, "above": 1}[where] * STEP[unit], 4)
    report = diagnose(_patient(c, value, unit), guideline=c.guideline)
    assert report.status == _expected(c, value, unit)
    if where == "below":
        assert report.status != c.status
    else:
        assert report.status == c.status
        fired = [x for x in report.criteria if x.test == c.test]
        assert len(fired) == 1
        assert (fired[0].value, fired[0].unit, fired[0].threshold) == (value, unit, threshold)
        assert fired[0].guideline == c.guideline and fired[0].category == c.category


def test_conversions():
    assert mmol_l_to_mg_dl(7.0) == pytest.approx(126.112)
    assert mg_dl_to_mmol_l(126) == pytest.approx(6.9938, abs=1e-4)
    assert pct_to_mmol_mol(6.5) == pytest.approx(10.929 * 4.35)
    assert mmol_mol_to_pct(pct_to_mmol_mol(5.7)) == pytest.approx(5.7)
    assert hba1c_pct(Measurement(48, MMOL_MOL)) == pytest.approx(48 / 10.929 + 2.15)


def test_value_is_compared_in_the_unit_it_was_entered_in():
    # 126 mg/dL converts to 6.99 mmol/L, yet it is diabetes: the mg/dL cut-point is 126.
    assert diagnose({"fpg_mg_dl": 126}, "ada").status == "diabetes"
    assert diagnose({"fpg_mmol_l": 6.99}, "ada").status == "prediabetes"
    # 48 mmol/mol is 6.54 %, 6.45 % would be 46.98 mmol/mol: each against its own cut-point.
    assert diagnose({"hba1c_mmol_mol": 48}, "who").status == "diabetes"
    assert diagnose({"hba1c_pct": 6.45}, "who").status == "normal"


def test_status_is_highest_category_reached_and_categories_are_named():
    r = diagnose({"fpg_mmol_l": 6.2, "ogtt_2h_mmol_l": 8.0}, "who")
    assert r.status == "prediabetes" and r.category == "IFG; IGT"
    r = diagnose({"fpg_mmol_l": 5.0, "hba1c_pct": 6.7}, "ada")
    assert r.status == "diabetes"
    assert diagnose({"hba1c_pct": 6.2}, "nice").category == "high risk"
    assert diagnose({"hba1c_pct": 6.2}, "who").status == "normal"  # WHO has no intermediate HbA1c range


def test_confirmation_rules():
    assert diagnose({"fpg_mmol_l": 7.5}, "ada").confirmation_needed is True
    assert diagnose({"fpg_mmol_l": 7.5, "hba1c_pct": 6.8}, "ada").confirmation_needed is False
    discordant = diagnose({"fpg_mmol_l": 7.5, "hba1c_pct": 6.0}, "ada")
    assert discordant.status == "diabetes" and discordant.confirmation_needed is True
    unequivocal = diagnose({"random_glucose_mmol_l": 15, "symptoms": 1}, "ada")
    assert unequivocal.status == "diabetes" and unequivocal.confirmation_needed is False
    assert diagnose({"hba1c_pct": 6.0}, "ada").confirmation_needed is False


def test_indeterminate_cases():
    r = diagnose({"random_glucose_mmol_l": 12.0, "symptoms": 0}, "ada")
    assert r.status == "indeterminate" and any("symptoms are absent" in f for f in r.flags)
    assert [f.test for f in r.followup] == ["fasting plasma glucose, HbA1c or a 75 g OGTT"]
    assert diagnose({}, "who").status == "indeterminate"
    assert diagnose({"age": 40, "bmi": 30}, "nice").status == "indeterminate"
    # random glucose without symptoms does not stop another test from deciding
    assert diagnose({"random_glucose_mmol_l": 12.0, "fpg_mmol_l": 5.0}, "ada").status == "normal"


def test_pregnancy_uses_gestational_criteria():
    assert diagnose({"pregnant": 1, "sex": "F", "fpg_mmol_l": 5.2}, "ada").status == "gestational_diabetes"
    assert diagnose({"pregnant": 1, "sex": "F", "fpg_mmol_l": 5.2}, "nice").status == "normal"
    assert diagnose({"pregnant": 1, "fpg_mmol_l": 7.1}, "who").status == "diabetes"
    assert diagnose({"pregnant": 1, "ogtt_2h_mmol_l": 11.2}, "nice").status == "diabetes"
    r = diagnose({"pregnant": 1, "ogtt_1h_mmol_l": 10.5}, "nice")
    assert r.status == "indeterminate" and any("not a NICE criterion" in f for f in r.flags)
    r = diagnose({"pregnant": 1, "hba1c_pct": 7.0, "fpg_mmol_l": 4.5}, "ada")
    assert r.hba1c_excluded.excluded and r.status == "normal"
    assert r.hba1c_excluded.reasons[0].startswith("pregnancy")


@pytest.mark.parametrize("flag", list(HBA1C_INTERFERENCES))
def test_each_interference_excludes_hba1c(flag):
    extra = {"sex": "F"} if flag == "pregnant" else {}
    r = diagnose({"hba1c_pct": 7.0, flag: 1, **extra}, "ada")
    assert r.hba1c_excluded.excluded and HBA1C_INTERFERENCES[flag] in r.hba1c_excluded.reasons
    assert r.status == "indeterminate" and not r.criteria
    clean = diagnose({"hba1c_pct": 7.0, flag: 0, **extra}, "ada")
    assert not clean.hba1c_excluded.excluded and clean.status == "diabetes"


def test_anaemia_by_haemoglobin_excludes_hba1c():
    assert diagnose({"hba1c_pct": 6.0, "sex": "M", "haemoglobin_g_l": 125}, "ada").hba1c_excluded.excluded
    assert not diagnose({"hba1c_pct": 6.0, "sex": "F", "haemoglobin_g_l": 125}, "ada").hba1c_excluded.excluded
    r = diagnose({"hba1c_pct": 6.0, "sex": "F", "haemoglobin_g_l": 100}, "ada")
    assert any(f.test.startswith("fructosamine") for f in r.followup)
    assert any("haemoglobin-variant" in f.test for f in r.followup)


@pytest.mark.parametrize("smear,excluded", [
    (SmearFindings(mean_rbc_diameter_um=5.6, fields=5), True),
    (SmearFindings(mean_rbc_diameter_um=9.1, fields=5), True),
    (SmearFindings(mean_rbc_diameter_um=7.4, fields=5), False),
    (SmearFindings(mean_rbc_diameter_um=7.4, rbc_diameter_cv_pct=16, fields=5), True),
    (SmearFindings(mean_rbc_diameter_um=7.4, rbc_diameter_cv_pct=9, fields=5), False),
    (SmearFindings(rbc_area_pct=20.0, fields=10), True),
    (SmearFindings(rbc_area_pct=55.0, fields=10), False),
    (SmearFindings(rbc_per_field=60, field_area_um2=10_000, fields=5), True),
    (SmearFindings(rbc_per_field=120, field_area_um2=10_000, fields=5), False),
    (SmearFindings(rbc_area_pct=20.0, fields=1), False),  # one field is too few to judge coverage
    (SmearFindings(mean_rbc_diameter_um=5.6, fields=1), False),  # ... and the same rule for cell size
    (SmearFindings(mean_rbc_diameter_um=5.6, fields=4), False),
])
def test_smear_rule(smear, excluded):
    r = diagnose(PatientInputs(hba1c=Measurement(6.6, PERCENT)), "ada", smear=smear)
    assert r.hba1c_excluded.excluded is excluded
    assert (r.status == "indeterminate") is excluded


def test_smear_rule_reports_what_it_could_not_judge():
    r = diagnose({"hba1c_pct": 6.6, "rbc_area_pct": 20, "smear_fields": 1}, "ada")
    assert not r.hba1c_excluded.excluded
    assert any("rbc_area_pct not judged: 1 field averaged, needs at least 5" in f for f in r.flags)
    r = diagnose({"hba1c_pct": 6.6, "mean_rbc_diameter_um": 5.0, "smear_fields": 1}, "ada")
    assert not r.hba1c_excluded.excluded  # one consistent minimum: size waits for 5 fields like coverage
    assert any("mean_rbc_diameter_um not judged: 1 field averaged, needs at least 5" in f for f in r.flags)
    r = diagnose({"hba1c_pct": 6.6, "rbc_area_pct": 20, "smear_fields": 8}, "ada")
    assert r.hba1c_excluded.excluded and "low red-cell coverage" in r.hba1c_excluded.reasons[0]
    assert any("haemoglobin-variant" in f.test for f in r.followup)


def test_uncalibrated_counts_alone_do_not_judge_red_cells():
    r = diagnose({"hba1c_pct": 6.6, "rbc_per_field": 40, "wbc_per_field": 1, "platelet_per_field": 3}, "ada")
    assert not r.hba1c_excluded.excluded
    assert any("cannot indicate anaemia" in f for f in r.flags)


def test_type_assessment():
    t = diagnose({"fpg_mmol_l": 9, "hba1c_pct": 8}, "ada").type
    assert t.label == "insufficient_information" and t.probabilities is None
    t1 = diagnose({"fpg_mmol_l": 12, "hba1c_pct": 9, "age": 24, "bmi": 21, "gad_positive": 1, "ketones": 1}, "ada")
    assert t1.type.label == "type_1" and t1.type.probabilities["type_1"] > 0.9
    assert any("autoantibodies" in f.test for f in t1.followup)
    t2 = diagnose({"fpg_mmol_l": 8, "hba1c_pct": 7.2, "age": 58, "bmi": 33, "c_peptide_pmol_l": 900}, "ada")
    assert t2.type.label == "type_2" and t2.type.probabilities["type_2"] > 0.95
    assert sum(t2.type.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert all("likelihood_ratio" in b for b in t2.type.basis)
    assert diagnose({"pregnant": 1, "fpg_mmol_l": 5.3}, "who").type.label == "gestational"
    assert diagnose({"hba1c_pct": 6.0}, "ada").type.label == "not_applicable"


def test_followups_cite_their_guideline():
    every = {f.trigger for f in FOLLOWUPS}
    for g in GUIDELINES:
        missing = every - {f.trigger for f in FOLLOWUPS if f.guideline == g}
        assert missing == ({"prediabetes_ogtt"} if g == "nice" else set())  # NICE does not advise an OGTT here
    pre = diagnose({"fpg_mmol_l": 6.0, "age": 50}, "ada")
    assert [f.test for f in pre.followup] == ["75 g OGTT", "retest at least yearly"]
    gdm = {g: diagnose({"pregnant": 1, "sex": "F", "ogtt_2h_mmol_l": 9.0}, g).followup for g in GUIDELINES}
    assert "4-12 weeks postpartum" in gdm["ada"][0].test and "section 15" in gdm["ada"][0].citation
    assert "6-13 weeks" in gdm["nice"][0].test and "NG3" in gdm["nice"][0].citation
    confirmed = diagnose({"fpg_mmol_l": 8, "hba1c_pct": 7.5}, "nice").followup
    assert {"lipid profile", "kidney function (creatinine, eGFR)", "urine albumin-to-creatinine ratio"} <= {f.test for f in confirmed}
    assert all(f.citation and f.guideline == "nice" for f in confirmed)
    at_risk = diagnose({"fpg_mmol_l": 5.0, "age": 45}, "ada").followup
    assert [f.test for f in at_risk] == ["rescreen at least every 3 years"]
    assert diagnose({"fpg_mmol_l": 5.0, "age": 25, "bmi": 22}, "ada").followup == []


@pytest.mark.parametrize("values,field", [
    ({"fpg_mmol_l": 0}, "fpg_mmol_l"),
    ({"fpg_mmol_l": -2}, "fpg_mmol_l"),
    ({"fpg_mmol_l": 60.5}, "fpg_mmol_l"),
    ({"fpg_mg_dl": 7}, "fpg_mg_dl"),
    ({"fpg_mmol_l": 0.5}, "fpg_mmol_l"),
    ({"hba1c_pct": 48}, "hba1c_pct"),
    ({"random_glucose_mg_dl": 1100}, "random_glucose_mg_dl"),
    ({"hba1c_pct": 25.5}, "hba1c_pct"),
    ({"hba1c_mmol_mol": 260}, "hba1c_mmol_mol"),
    ({"age": -1}, "age"),
    ({"age": "forty"}, "age"),
    ({"fpg_mmol_l": "7,0"}, "fpg_mmol_l"),
    ({"fpg_g_l": 1.1}, "fpg_g_l"),
    ({"hba1c": "6.5 mg/dL"}, "hba1c"),
    ({"sex": "X"}, "sex"),
    ({"symptoms": "maybe"}, "symptoms"),
    ({"pregnant": 1, "sex": "M"}, "pregnant"),
    ({"fpg_mmol_l": 7, "fpg_mg_dl": 126}, "fpg_mg_dl"),
])
def test_bad_input_names_the_field(values, field):
    with pytest.raises(InvalidInputs) as err:
        diagnose(values, "ada")
    assert [e.field for e in err.value.errors] == [field]
    assert field in str(err.value)


def test_unit_mistakes_are_named():
    with pytest.raises(InvalidInputs, match="fpg 7 mg/dL is not plausible .*did you mean 7 mmol/L"):
        diagnose({"fpg_mg_dl": 7}, "ada")
    with pytest.raises(InvalidInputs, match="hba1c 48 % is not plausible .*did you mean 48 mmol/mol"):
        diagnose({"hba1c": "48 %"}, "ada")


def test_limits_are_inclusive_where_possible():
    assert diagnose({"fpg_mmol_l": 60.0, "hba1c_pct": 25.0, "age": 0}, "ada").status == "diabetes"


def test_unknown_guideline():
    with pytest.raises(Exception, match="guideline"):
        diagnose({"fpg_mmol_l": 5}, "easd")


def test_report_fits_result_schema():
    from runtime.contracts.schema import schema_errors

    report = diagnose({"fpg_mmol_l": 7.4, "hba1c_pct": 6.9, "age": 50, "bmi": 31, "sex": "M"}, "who")
    message = {
        "schema": "result/1", "result_id": "01890f3e-7b1c-7abc-8def-0123456789ab", "device_id": "dev-1",
        "seq": 0, "created_at": "2026-01-01T00:00:00Z", "sample": {"sample_id": "s1"},
        "model": {"name": "m", "version": "1", "sha256": "0" * 64}, "quality": {"accepted": True},
        "counts": {"rbc": 1, "wbc": 0, "platelet": 0},
        "area_pct": {"background": 90.0, "rbc": 10.0, "wbc": 0.0, "platelet": 0.0},
        "timings_ms": {}, "diagnosis": report.to_dict(),
    }
    assert schema_errors(message) == []
    d = report.to_dict()
    for key in ("guideline", "status", "confirmation_needed", "criteria", "hba1c_excluded", "type",
                "probabilities", "followup", "flags", "category"):
        assert key in d


from hypothesis import given, settings, strategies as st  # noqa: E402

_TEST_UNITS = sorted({(c.guideline, c.pregnant, c.test, u) for c in CUTPOINTS for u in c.thresholds})


@settings(max_examples=150, deadline=None)
@given(case=st.sampled_from(_TEST_UNITS), a=st.floats(0.0, 1.0), b=st.floats(0.0, 1.0))
def test_a_higher_value_never_gives_a_lower_status(case, a, b):
    """Across each test's whole plausible range (runtime.contracts.plausible.LABS)."""
    from runtime.contracts.plausible import LABS, lab_column

    guideline, pregnant, test, unit = case
    rng = LABS[lab_column(test, unit)]
    lo, hi = sorted(round(rng.low + f * (rng.high - rng.low), 2) for f in (a, b))
    statuses = [diagnose(PatientInputs(pregnant=pregnant, symptoms=True, **{test: Measurement(v, unit)}),
                         guideline).status for v in (lo, hi)]
    ranks = [STATUS_RANK.get(s, -1) for s in statuses]  # indeterminate (random glucose below 11.1) lowest
    assert ranks[0] <= ranks[1], (case, lo, hi, statuses)


def test_device_lab_mapping_with_other_keys():
    labs = {"sample_id": "S-1", "fpg_mmol_l": "6.4", "hba1c_pct": 5.9, "operator": "x"}
    r = diagnose(labs, "ada")
    assert r.status == "prediabetes" and {c.test for c in r.criteria} == {"fpg", "hba1c"}
