"""Type 1 vs type 2 from transparent clinical features: a prior multiplied by likelihood ratios
(tables.TYPE_FEATURES), every factor listed in the result. Says "insufficient information" rather
than guess when nothing discriminating is known."""

from __future__ import annotations

from typing import Callable

from runtime.diagnosis.inputs import PatientInputs
from runtime.diagnosis.report import TypeAssessment
from runtime.diagnosis.tables import CITATIONS, TYPE1_PRIOR, TYPE_DECISIVE, TYPE_FEATURES

_ANTIBODIES = ("gad_positive", "ia2_positive", "znt8_positive")

CONDITIONS: dict[str, Callable[[PatientInputs], bool]] = {
    "autoantibody_positive": lambda p: any(getattr(p, a) is True for a in _ANTIBODIES),
    "autoantibody_negative": lambda p: any(getattr(p, a) is False for a in _ANTIBODIES)
    and not any(getattr(p, a) is True for a in _ANTIBODIES),
    "c_peptide_low": lambda p: p.c_peptide_pmol_l is not None and p.c_peptide_pmol_l < 200,
    "c_peptide_mid": lambda p: p.c_peptide_pmol_l is not None and 200 <= p.c_peptide_pmol_l <= 600,
    "c_peptide_high": lambda p: p.c_peptide_pmol_l is not None and p.c_peptide_pmol_l > 600,
    "ketones": lambda p: p.ketones is True,
    "age_under_35": lambda p: p.age is not None and p.age < 35,
    "age_35_plus": lambda p: p.age is not None and p.age >= 35,
    "bmi_under_25": lambda p: p.bmi is not None and p.bmi < 25,
    "bmi_30_plus": lambda p: p.bmi is not None and p.bmi >= 30,
}

#: Between these probabilities of type 1 the label is "uncertain".
TYPE1_LABEL_AT = 0.7
TYPE2_LABEL_AT = 0.3


def assess_type(p: PatientInputs, status: str) -> TypeAssessment:
    if status == "gestational_diabetes":
        return TypeAssessment("gestational", None, [],
                              "gestational diabetes by definition (first found in pregnancy, below diabetes "
                              "thresholds); the postpartum test shows whether diabetes persists")
    if status != "diabetes":
        return TypeAssessment("not_applicable", None, [], f"no type assessment for status {status}")
    matched = [f for f in TYPE_FEATURES if CONDITIONS[f.when](p)]
    keys = {f.when for f in matched}
    if not (keys & set(TYPE_DECISIVE)) and not (p.age is not None and p.bmi is not None):
        return TypeAssessment(
            "insufficient_information", None,
            [{"feature": f.name, "likelihood_ratio": f.lr} for f in matched],
            "needs islet autoantibodies or C-peptide, or at least age and BMI",
        )
    odds = TYPE1_PRIOR / (1 - TYPE1_PRIOR)
    for f in matched:
        odds *= f.lr
    p1 = odds / (1 + odds)
    label = "type_1" if p1 >= TYPE1_LABEL_AT else "type_2" if p1 <= TYPE2_LABEL_AT else "uncertain"
    note = (f"prior P(type 1) {TYPE1_PRIOR:g} times the likelihood ratios listed; approximate ratios from "
            f"the features in {CITATIONS['consensus-t1d-2021']}, not a validated model; monogenic and "
            "secondary diabetes are not assessed")
    if p.is_pregnant:
        note += "; diabetes first found in pregnancy is likely pre-existing"
    return TypeAssessment(
        label, {"type_1": round(p1, 3), "type_2": round(1 - p1, 3)},
        [{"feature": f.name, "likelihood_ratio": f.lr, "citation": CITATIONS[f.source]} for f in matched],
        note,
    )
