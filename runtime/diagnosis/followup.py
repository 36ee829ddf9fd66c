"""Recommended follow-up tests: decide which triggers apply, then look them up in tables.FOLLOWUPS."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.diagnosis.inputs import PatientInputs
from runtime.diagnosis.report import FollowUpItem, HbA1cReliability, TypeAssessment
from runtime.diagnosis.tables import (
    CITATIONS, FOLLOWUPS, RESCREEN_AGE, RESCREEN_BMI, TYPE1_SUGGESTED_AT, cutpoints_for,
)


@dataclass(frozen=True)
class Findings:
    """What the guideline rules concluded and what the smear showed: the follow-up rules' facts."""

    status: str
    confirmation_needed: bool
    tests_evaluated: list[str]
    random_without_symptoms: bool = False
    red_cells_abnormal: bool = False
    anaemia: bool = False


def followup_triggers(p: PatientInputs, guideline: str, findings: Findings, hba1c: HbA1cReliability,
                      type_: TypeAssessment) -> list[str]:
    """The follow-up triggers that apply, in the order they should be read."""
    status, confirmation_needed = findings.status, findings.confirmation_needed
    random_without_symptoms, tests_evaluated = findings.random_without_symptoms, findings.tests_evaluated
    red_cells_abnormal, anaemia = findings.red_cells_abnormal, findings.anaemia
    triggers: list[str] = []
    if status == "indeterminate":
        triggers.append("random_without_symptoms" if random_without_symptoms else "no_usable_input")
    if confirmation_needed:
        triggers.append("confirm")
    if status == "prediabetes":
        has_ogtt_rule = any(c.test == "ogtt_2h" for c in cutpoints_for(guideline, False))
        if has_ogtt_rule and "ogtt_2h" not in tests_evaluated:
            triggers.append("prediabetes_ogtt")
        triggers.append("prediabetes_retest")
    if status == "normal" and not p.is_pregnant and (
        (p.age is not None and p.age >= RESCREEN_AGE) or (p.bmi is not None and p.bmi >= RESCREEN_BMI)
    ):
        triggers.append("normal_at_risk")
    if status == "gestational_diabetes":
        triggers.append("gdm_postpartum")
    if status == "diabetes":
        p1 = (type_.probabilities or {}).get("type_1")
        young_or_ketotic = p.ketones is True or (p.age is not None and p.age < 35)
        if (p1 is not None and p1 >= TYPE1_SUGGESTED_AT) or (p1 is None and young_or_ketotic):
            triggers.append("type1_features")
    non_pregnancy_reasons = hba1c.excluded and (not p.is_pregnant or len(hba1c.reasons) > 1)
    if non_pregnancy_reasons:
        triggers.append("hba1c_unreliable")
    if p.haemoglobinopathy or red_cells_abnormal or anaemia:
        triggers.append("hb_variant_workup")
    if status == "diabetes" and not confirmation_needed:
        triggers.append("confirmed_diabetes")
    return triggers


def followups_for(triggers: list[str], guideline: str) -> list[FollowUpItem]:
    return [
        FollowUpItem(f.test, f.reason, f.guideline, CITATIONS[f.source])
        for trigger in triggers for f in FOLLOWUPS if f.trigger == trigger and f.guideline == guideline
    ]
