"""The clinical rules as data: guideline cut-points, anaemia and smear reference ranges,
type-assessment likelihood ratios and follow-up recommendations.

The engine only walks these tables; changing a rule means changing a row here, and the tests
generate their cases from the same rows (every cut-point at, just below and just above it, in
both units).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from runtime.diagnosis.units import MG_DL, MMOL_L, MMOL_MOL, PERCENT

GUIDELINES = ("who", "ada", "nice")
STATUSES = ("normal", "prediabetes", "diabetes", "gestational_diabetes", "indeterminate")
#: Order used for "the highest category any usable criterion reaches".
STATUS_RANK = MappingProxyType({"normal": 0, "prediabetes": 1, "gestational_diabetes": 2, "diabetes": 3})

#: Tests, the kind of quantity each one measures, and its input field name.
GLUCOSE_TESTS = ("fpg", "ogtt_1h", "ogtt_2h", "random_glucose")
TESTS = GLUCOSE_TESTS + ("hba1c",)
TEST_LABELS = MappingProxyType({
    "fpg": "fasting plasma glucose",
    "ogtt_1h": "1-h plasma glucose (75 g OGTT)",
    "ogtt_2h": "2-h plasma glucose (75 g OGTT)",
    "random_glucose": "random plasma glucose",
    "hba1c": "HbA1c",
})

# Citations, referred to by key from every table row.
CITATIONS = MappingProxyType({
    "ada-2": "ADA Standards of Care in Diabetes 2024, section 2: Diagnosis and Classification of Diabetes",
    "ada-3": "ADA Standards of Care in Diabetes 2024, section 3: Prevention or Delay of Diabetes",
    "ada-4": "ADA Standards of Care in Diabetes 2024, section 4: Comprehensive Medical Evaluation",
    "ada-15": "ADA Standards of Care in Diabetes 2024, section 15: Management of Diabetes in Pregnancy",
    "who-2006": "WHO/IDF 2006: Definition and diagnosis of diabetes mellitus and intermediate hyperglycaemia",
    "who-2011": "WHO 2011: Use of glycated haemoglobin (HbA1c) in the diagnosis of diabetes mellitus",
    "who-2013": "WHO 2013: Diagnostic criteria and classification of hyperglycaemia first detected in pregnancy (IADPSG criteria)",
    "who-2019": "WHO 2019: Classification of diabetes mellitus",
    "who-hb-2011": "WHO 2011: Haemoglobin concentrations for the diagnosis of anaemia and assessment of severity",
    "nice-ph38": "NICE PH38: Type 2 diabetes: prevention in people at high risk",
    "nice-ng28": "NICE NG28: Type 2 diabetes in adults: management",
    "nice-ng17": "NICE NG17: Type 1 diabetes in adults: diagnosis and management",
    "nice-ng3": "NICE NG3: Diabetes in pregnancy: management from preconception to the postnatal period",
    "consensus-t1d-2021": "ADA/EASD 2021 consensus report: The management of type 1 diabetes in adults (Holt et al.)",
    "smearscope-smear": "smearscope screening heuristic for smear red-cell findings (project-defined, see docs/diagnosis.md)",
})


@dataclass(frozen=True)
class Cutpoint:
    """A value at or above `thresholds[unit]` reaches `status` (named `category` by the guideline).

    The upper end of a range is the next cut-point of the same test (e.g. ADA IFG 5.6-6.9 is
    ">= 5.6 and below the 7.0 diabetes cut-point"). Each unit has its own published threshold.
    """

    guideline: str
    pregnant: bool
    test: str
    status: str
    category: str
    thresholds: Mapping[str, float]
    source: str
    needs_symptoms: bool = False


def _glucose(guideline: str, pregnant: bool, test: str, status: str, category: str,
             mmol_l_mg_dl: tuple[float, float], source: str, needs_symptoms: bool = False) -> Cutpoint:
    """A glucose cut-point as the guideline prints it: (mmol/L, mg/dL)."""
    mmol_l, mg_dl = mmol_l_mg_dl
    return Cutpoint(guideline, pregnant, test, status, category,
                    MappingProxyType({MMOL_L: mmol_l, MG_DL: mg_dl}), source, needs_symptoms)


def _hba1c(guideline: str, status: str, category: str, pct: float, mmol_mol: float, source: str) -> Cutpoint:
    return Cutpoint(guideline, False, "hba1c", status, category,
                    MappingProxyType({PERCENT: pct, MMOL_MOL: mmol_mol}), source)


CUTPOINTS: tuple[Cutpoint, ...] = (
    # ---- ADA, non-pregnant adults
    _glucose("ada", False, "fpg", "prediabetes", "IFG (prediabetes)", (5.6, 100), "ada-2"),
    _glucose("ada", False, "fpg", "diabetes", "diabetes", (7.0, 126), "ada-2"),
    _glucose("ada", False, "ogtt_2h", "prediabetes", "IGT (prediabetes)", (7.8, 140), "ada-2"),
    _glucose("ada", False, "ogtt_2h", "diabetes", "diabetes", (11.1, 200), "ada-2"),
    _hba1c("ada", "prediabetes", "prediabetes (HbA1c)", 5.7, 39, "ada-2"),
    _hba1c("ada", "diabetes", "diabetes", 6.5, 48, "ada-2"),
    _glucose("ada", False, "random_glucose", "diabetes", "diabetes (symptoms + random glucose)", (11.1, 200), "ada-2", True),
    # ---- WHO, non-pregnant adults
    _glucose("who", False, "fpg", "prediabetes", "IFG", (6.1, 110), "who-2006"),
    _glucose("who", False, "fpg", "diabetes", "diabetes", (7.0, 126), "who-2006"),
    _glucose("who", False, "ogtt_2h", "prediabetes", "IGT", (7.8, 140), "who-2006"),
    _glucose("who", False, "ogtt_2h", "diabetes", "diabetes", (11.1, 200), "who-2006"),
    _hba1c("who", "diabetes", "diabetes", 6.5, 48, "who-2011"),
    _glucose("who", False, "random_glucose", "diabetes", "diabetes (symptoms + random glucose)", (11.1, 200), "who-2006", True),
    # ---- NICE, non-pregnant adults
    _glucose("nice", False, "fpg", "prediabetes", "high risk", (5.5, 99), "nice-ph38"),
    _glucose("nice", False, "fpg", "diabetes", "diabetes", (7.0, 126), "nice-ng28"),
    _glucose("nice", False, "ogtt_2h", "diabetes", "diabetes", (11.1, 200), "nice-ng28"),
    _hba1c("nice", "prediabetes", "high risk", 6.0, 42, "nice-ph38"),
    _hba1c("nice", "diabetes", "diabetes", 6.5, 48, "nice-ng28"),
    _glucose("nice", False, "random_glucose", "diabetes", "diabetes (symptoms + random glucose)", (11.1, 200), "nice-ng28", True),
    # ---- pregnancy: IADPSG / WHO 2013, used for WHO and ADA
    *(row for g in ("who", "ada") for row in (
        _glucose(g, True, "fpg", "gestational_diabetes", "gestational diabetes (IADPSG)", (5.1, 92), "who-2013"),
        _glucose(g, True, "fpg", "diabetes", "diabetes in pregnancy", (7.0, 126), "who-2013"),
        _glucose(g, True, "ogtt_1h", "gestational_diabetes", "gestational diabetes (IADPSG)", (10.0, 180), "who-2013"),
        _glucose(g, True, "ogtt_2h", "gestational_diabetes", "gestational diabetes (IADPSG)", (8.5, 153), "who-2013"),
        _glucose(g, True, "ogtt_2h", "diabetes", "diabetes in pregnancy", (11.1, 200), "who-2013"),
        _glucose(g, True, "random_glucose", "diabetes", "diabetes in pregnancy (symptoms + random glucose)", (11.1, 200), "who-2013", True),
    )),
    # ---- pregnancy: NICE NG3
    _glucose("nice", True, "fpg", "gestational_diabetes", "gestational diabetes (NICE NG3)", (5.6, 101), "nice-ng3"),
    _glucose("nice", True, "fpg", "diabetes", "pre-existing diabetes likely", (7.0, 126), "nice-ng3"),
    _glucose("nice", True, "ogtt_2h", "gestational_diabetes", "gestational diabetes (NICE NG3)", (7.8, 140), "nice-ng3"),
    _glucose("nice", True, "ogtt_2h", "diabetes", "pre-existing diabetes likely", (11.1, 200), "nice-ng3"),
)


def cutpoints_for(guideline: str, pregnant: bool) -> tuple[Cutpoint, ...]:
    """The rows of one guideline for one population."""
    return tuple(c for c in CUTPOINTS if c.guideline == guideline and c.pregnant == pregnant)


# ---------------------------------------------------------------------------------------------
# HbA1c reliability

#: Input flags that make HbA1c unreliable, with the reason printed in the result.
HBA1C_INTERFERENCES = MappingProxyType({
    "pregnant": "pregnancy (red-cell turnover changes; use glucose criteria)",
    "haemoglobinopathy": "haemoglobinopathy or haemoglobin variant",
    "recent_transfusion": "recent blood transfusion",
    "recent_blood_loss": "recent blood loss",
    "haemodialysis": "haemodialysis / advanced kidney disease",
    "erythropoietin": "erythropoietin therapy",
})


@dataclass(frozen=True)
class AnaemiaCutoff:
    """WHO 2011: anaemia when haemoglobin is below `below_g_l` (adults, sea level)."""

    population: str
    below_g_l: float


ANAEMIA_CUTOFFS = MappingProxyType({
    "pregnant": AnaemiaCutoff("pregnant women", 110.0),
    "F": AnaemiaCutoff("non-pregnant women", 120.0),
    "M": AnaemiaCutoff("men", 130.0),
    # Sex unknown: the lowest non-pregnant adult cut-off, so only certain anaemia is flagged.
    "unknown": AnaemiaCutoff("adults, sex unknown", 120.0),
})


@dataclass(frozen=True)
class SmearRange:
    """A reference range for one smear measurement; outside it the smear suggests `finding`.

    Every measure is judged only over SMEAR_MIN_FIELDS fields or more (one rule for all)."""

    measure: str
    low: float | None
    high: float | None
    unit: str
    finding: str
    needs_calibration: bool


#: Fields a smear measure must be averaged over before any red-cell rule judges it: coverage and
#: density vary from field to field, and one field's mean cell size rests on a few dozen cells.
SMEAR_MIN_FIELDS = 5
#: Typical red-cell area (7.5 µm diameter) used to turn the coverage limit into a density limit.
RBC_AREA_UM2 = 44.2
#: Project-defined screening ranges (their basis and limits are in docs/diagnosis.md).
SMEAR_RANGES: tuple[SmearRange, ...] = (
    # Normal red cells are 6.2-8.2 µm across; the limits are widened by 0.2-0.8 µm because the
    # diameter comes from segmented areas (touching cells that merge inflate it).
    SmearRange("mean_rbc_diameter_um", 6.0, 9.0, "µm", "abnormal red-cell size (micro- or macrocytosis)", True),
    SmearRange("rbc_diameter_cv_pct", None, 15.0, "%", "anisocytosis (red cells of unequal size)", True),
    # 30 % coverage of the reading area: below the 5th percentile of the TXL-PBC training images.
    SmearRange("rbc_area_pct", 30.0, None, "% of field", "low red-cell coverage of the reading area (possible anaemia)", False),
    SmearRange("rbc_per_10000_um2", round(30.0 / 100 * 1e4 / RBC_AREA_UM2), None, "cells per 10,000 µm²",
               "low red-cell density (possible anaemia)", True),
)


# ---------------------------------------------------------------------------------------------
# Type assessment: type 1 vs type 2 as likelihood ratios on a prior

#: Prior probability of type 1 among adults with newly found diabetes (ADA: 5-10 % of diabetes).
TYPE1_PRIOR = 0.08


@dataclass(frozen=True)
class TypeFeature:
    """`when` holds on the inputs -> multiply the odds of type 1 (vs type 2) by `lr`."""

    name: str
    when: str
    lr: float
    source: str


TYPE_FEATURES: tuple[TypeFeature, ...] = (
    TypeFeature("islet autoantibody positive (GAD, IA-2 or ZnT8)", "autoantibody_positive", 25.0, "consensus-t1d-2021"),
    TypeFeature("islet autoantibodies tested negative", "autoantibody_negative", 0.3, "consensus-t1d-2021"),
    TypeFeature("C-peptide < 200 pmol/L (severe insulin deficiency)", "c_peptide_low", 10.0, "consensus-t1d-2021"),
    TypeFeature("C-peptide 200-600 pmol/L (intermediate; retest)", "c_peptide_mid", 1.0, "consensus-t1d-2021"),
    TypeFeature("C-peptide > 600 pmol/L (preserved insulin secretion)", "c_peptide_high", 0.1, "consensus-t1d-2021"),
    TypeFeature("ketones present", "ketones", 4.0, "consensus-t1d-2021"),
    TypeFeature("age < 35 years", "age_under_35", 4.0, "consensus-t1d-2021"),
    TypeFeature("age >= 35 years", "age_35_plus", 0.5, "consensus-t1d-2021"),
    TypeFeature("BMI < 25 kg/m²", "bmi_under_25", 2.5, "consensus-t1d-2021"),
    TypeFeature("BMI >= 30 kg/m²", "bmi_30_plus", 0.4, "consensus-t1d-2021"),
)
#: Features that can discriminate on their own; without one of them, or both age and BMI, the
#: assessment is "insufficient information".
TYPE_DECISIVE = ("autoantibody_positive", "autoantibody_negative", "c_peptide_low", "c_peptide_high")
#: Probability of type 1 at or above which features "suggest type 1" (and its work-up is advised).
TYPE1_SUGGESTED_AT = 0.3


# ---------------------------------------------------------------------------------------------
# Follow-up tests


@dataclass(frozen=True)
class FollowUp:
    """A recommended test for a trigger under one guideline, with its citation key."""

    trigger: str
    guideline: str
    test: str
    reason: str
    source: str


def _all(trigger: str, test: str, reason: str, sources: Mapping[str, str]) -> tuple[FollowUp, ...]:
    return tuple(FollowUp(trigger, g, test, reason, sources[g]) for g in GUIDELINES)


FOLLOWUPS: tuple[FollowUp, ...] = (
    *_all("confirm", "repeat the abnormal test on a new sample (or a second different test)",
          "a single abnormal result without unequivocal hyperglycaemia needs confirmation",
          {"ada": "ada-2", "who": "who-2006", "nice": "nice-ng28"}),
    *_all("no_usable_input", "fasting plasma glucose or HbA1c (or a 75 g OGTT)",
          "no usable diagnostic value was given",
          {"ada": "ada-2", "who": "who-2006", "nice": "nice-ng28"}),
    *_all("random_without_symptoms", "fasting plasma glucose, HbA1c or a 75 g OGTT",
          "a random glucose >= 11.1 mmol/L without classic symptoms cannot diagnose diabetes",
          {"ada": "ada-2", "who": "who-2006", "nice": "nice-ng28"}),
    FollowUp("prediabetes_ogtt", "who", "75 g OGTT", "IFG: an OGTT shows whether IGT or diabetes is present", "who-2006"),
    FollowUp("prediabetes_ogtt", "ada", "75 g OGTT", "fasting glucose or HbA1c alone may miss diabetes found by the 2-h value", "ada-2"),
    FollowUp("prediabetes_retest", "ada", "retest at least yearly", "prediabetes: progression to diabetes is monitored yearly", "ada-3"),
    FollowUp("prediabetes_retest", "who", "retest yearly (WHO gives no interval; ADA yearly)", "intermediate hyperglycaemia", "ada-3"),
    FollowUp("prediabetes_retest", "nice", "HbA1c or fasting glucose at least yearly", "high risk of type 2 diabetes", "nice-ph38"),
    FollowUp("normal_at_risk", "ada", "rescreen at least every 3 years", "normal result with risk factors (age >= 35, overweight or prior gestational diabetes)", "ada-2"),
    FollowUp("normal_at_risk", "who", "rescreen every 3 years (WHO gives no interval; ADA 3-yearly)", "normal result with risk factors", "ada-2"),
    FollowUp("normal_at_risk", "nice", "reassess risk at least every 3 years", "normal result with risk factors", "nice-ph38"),
    FollowUp("gdm_postpartum", "ada", "75 g OGTT at 4-12 weeks postpartum, then every 1-3 years", "after gestational diabetes", "ada-15"),
    FollowUp("gdm_postpartum", "who", "75 g OGTT at 4-12 weeks postpartum (ADA timing)", "after gestational diabetes", "ada-15"),
    FollowUp("gdm_postpartum", "nice", "fasting plasma glucose at 6-13 weeks postpartum (HbA1c if later)", "after gestational diabetes", "nice-ng3"),
    FollowUp("type1_features", "ada", "islet autoantibodies (GAD, IA-2, ZnT8) and C-peptide", "clinical features suggest type 1 diabetes", "ada-2"),
    FollowUp("type1_features", "who", "islet autoantibodies and C-peptide", "clinical features suggest type 1 diabetes", "who-2019"),
    FollowUp("type1_features", "nice", "islet autoantibodies and C-peptide if the type is uncertain", "clinical features suggest type 1 diabetes", "nice-ng17"),
    *_all("hba1c_unreliable", "fructosamine (or glucose-based tests)",
          "HbA1c is unreliable for this patient",
          {"ada": "ada-2", "who": "who-2011", "nice": "nice-ng28"}),
    *_all("hb_variant_workup", "full blood count and haemoglobin-variant work-up (HPLC or electrophoresis)",
          "haemoglobinopathy, anaemia or abnormal red cells can bias HbA1c",
          {"ada": "ada-2", "who": "who-2011", "nice": "nice-ng28"}),
    *_all("confirmed_diabetes", "lipid profile", "baseline work-up after a confirmed diagnosis",
          {"ada": "ada-4", "who": "ada-4", "nice": "nice-ng28"}),
    *_all("confirmed_diabetes", "kidney function (creatinine, eGFR)", "baseline work-up after a confirmed diagnosis",
          {"ada": "ada-4", "who": "ada-4", "nice": "nice-ng28"}),
    *_all("confirmed_diabetes", "urine albumin-to-creatinine ratio", "baseline work-up after a confirmed diagnosis",
          {"ada": "ada-4", "who": "ada-4", "nice": "nice-ng28"}),
)

#: Risk factors that make a normal result worth rescreening (ADA section 2 screening criteria).
RESCREEN_AGE = 35.0
RESCREEN_BMI = 25.0
