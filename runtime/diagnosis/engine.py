"""The guideline engine: walk the cut-point table for the patient's population, take the highest
category any usable criterion reaches, decide whether confirmation is needed, and assemble the
report (HbA1c reliability, type assessment, network probabilities, follow-up tests)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from runtime.diagnosis.diabetes_type import assess_type
from runtime.diagnosis.features import network_view
from runtime.diagnosis.followup import Findings, followup_triggers, followups_for
from runtime.diagnosis.inputs import PatientInputs, patient_inputs_from_mapping
from runtime.diagnosis.report import Criterion, DiagnosisReport, HbA1cReliability
from runtime.diagnosis.smear import SmearFindings, assess_red_cells, smear_from_mapping
from runtime.diagnosis.tables import (
    ANAEMIA_CUTOFFS, CITATIONS, GUIDELINES, HBA1C_INTERFERENCES, STATUS_RANK, TEST_LABELS, TESTS,
    cutpoints_for,
)
from runtime.diagnosis.units import InputError

if TYPE_CHECKING:
    from runtime.diagnosis.network import DiagnosisNetwork


def anaemia_reason(p: PatientInputs) -> str | None:
    """WHO 2011 haemoglobin cut-off reached, as a reason string, else None."""
    if p.haemoglobin_g_l is None:
        return None
    key = "pregnant" if p.is_pregnant else (p.sex or "unknown")
    cutoff = ANAEMIA_CUTOFFS[key]
    if p.haemoglobin_g_l < cutoff.below_g_l:
        return (f"anaemia: haemoglobin {p.haemoglobin_g_l:g} g/L < {cutoff.below_g_l:g} g/L "
                f"({cutoff.population}; {CITATIONS['who-hb-2011']})")
    return None


def hba1c_reliability(p: PatientInputs, smear: SmearFindings | None) -> tuple[HbA1cReliability, bool, bool]:
    """(reliability, anaemia found, smear red cells abnormal)."""
    reasons = [text for name, text in HBA1C_INTERFERENCES.items() if getattr(p, name) is True]
    anaemia = anaemia_reason(p)
    if anaemia:
        reasons.append(anaemia)
    red_cells = assess_red_cells(smear)
    reasons.extend(red_cells.findings)
    return HbA1cReliability(bool(reasons), reasons), anaemia is not None, red_cells.suggests_abnormal


def _check_guideline(guideline: str) -> str:
    g = guideline.strip().lower()
    if g not in GUIDELINES:
        raise InputError("guideline", f"unknown guideline {guideline!r} (use {', '.join(GUIDELINES)})")
    return g


def diagnose(
    inputs: PatientInputs | Mapping[str, Any],
    guideline: str = "ada",
    smear: SmearFindings | None = None,
    network: "DiagnosisNetwork | None" = None,
) -> DiagnosisReport:
    """Diagnose one patient under one guideline (see docs/diagnosis.md for the rules)."""
    guideline = _check_guideline(guideline)
    if not isinstance(inputs, PatientInputs):
        mapping = inputs
        inputs = patient_inputs_from_mapping(mapping)
        if smear is None:
            smear = smear_from_mapping(mapping)
    p = inputs
    pregnant = p.is_pregnant
    flags: list[str] = []
    if p.pregnant is None and p.sex == "F":
        flags.append("pregnancy status unknown: non-pregnant criteria used")
    hba1c, anaemia, red_cells_abnormal = hba1c_reliability(p, smear)
    flags.extend(assess_red_cells(smear).notes)

    rows = cutpoints_for(guideline, pregnant)
    population = "pregnant" if pregnant else "non-pregnant adult"
    criteria: list[Criterion] = []
    evaluated: list[str] = []
    random_without_symptoms = False
    for test in TESTS:
        m = p.measurement(test)
        if m is None:
            continue
        label = TEST_LABELS[test]
        if test == "hba1c" and hba1c.excluded:
            flags.append(f"HbA1c {m} not used: " + "; ".join(hba1c.reasons))
            continue
        test_rows = [r for r in rows if r.test == test]
        if not test_rows:
            group = "pregnancy" if pregnant else "non-pregnant adults"
            flags.append(f"{label} is not a {guideline.upper()} criterion in {group}; not used")
            continue
        reached = [r for r in test_rows if m.value >= r.thresholds[m.unit]]
        if any(r.needs_symptoms for r in test_rows):
            if reached and p.symptoms is True:
                evaluated.append(test)
            else:
                if reached:
                    random_without_symptoms = True
                    flags.append(f"{label} {m} reaches {reached[0].thresholds[m.unit]:g} {m.unit} but classic "
                                 f"symptoms are {'absent' if p.symptoms is False else 'not recorded'}: not diagnostic alone")
                else:
                    flags.append(f"{label} {m} below the diagnostic cut-point cannot exclude diabetes; not used")
                continue
        else:
            evaluated.append(test)
        if reached:
            top = max(reached, key=lambda r: STATUS_RANK[r.status])
            criteria.append(Criterion(test, label, m.value, m.unit, float(top.thresholds[m.unit]), guideline,
                                      top.status, top.category, CITATIONS[top.source]))

    if not evaluated:
        status, category = "indeterminate", None
    elif criteria:
        status = max((c.status for c in criteria), key=STATUS_RANK.__getitem__)
        category = "; ".join(dict.fromkeys(c.category for c in criteria if c.status == status))
    else:
        status, category = "normal", "normal"

    unequivocal = any(c.test == "random_glucose" for c in criteria)
    diabetes_tests = {c.test for c in criteria if c.status == "diabetes"}
    confirmation_needed = status == "diabetes" and not unequivocal and len(diabetes_tests) < 2
    confirmation_reason = _confirmation_reason(p, criteria, evaluated) if confirmation_needed else None
    if confirmation_reason:
        flags.append(confirmation_reason)

    type_ = assess_type(p, status)
    probabilities = network.predict(p, exclude_hba1c=hba1c.excluded) if network is not None else None
    seen = network_view(p, exclude_hba1c=hba1c.excluded) if probabilities else None
    if seen:
        flags.extend(unseen_by_network(seen, criteria))
    findings = Findings(status, confirmation_needed, evaluated, random_without_symptoms, red_cells_abnormal, anaemia)
    triggers = followup_triggers(p, guideline, findings, hba1c, type_)
    return DiagnosisReport(
        guideline=guideline, status=status, category=category, criteria=criteria,
        confirmation_needed=confirmation_needed, flags=flags, hba1c_excluded=hba1c,
        probabilities=probabilities, type=type_, followup=followups_for(triggers, guideline),
        tests_evaluated=evaluated, population=population, confirmation_reason=confirmation_reason,
        network=seen,
    )


def _confirmation_reason(p: PatientInputs, criteria: list[Criterion], evaluated: list[str]) -> str:
    """Why a diabetes-level result needs confirming: the one test it rests on, and any other test
    that did not agree."""
    at_diabetes = [c for c in criteria if c.status == "diabetes"]
    basis = ", ".join(f"{c.label} {c.value:g} {c.unit} >= {c.threshold:g} {c.unit}" for c in at_diabetes)
    others = [t for t in evaluated if t not in {c.test for c in at_diabetes}]
    disagree = ", ".join(f"{TEST_LABELS[t]} {p.measurement(t)}" for t in others)
    return (f"confirm: diabetes rests on one test ({basis})"
            + (f"; {disagree} below the diabetes cut-point (discordant)" if disagree else "")
            + ": repeat it on a new sample, or a second test, before diagnosing")


def unseen_by_network(seen: dict[str, list[str]], criteria: list[Criterion]) -> list[str]:
    """Flags for the network's blind spots: given inputs it does not take, and guideline criteria
    resting on a test it did not see (its probabilities cannot reflect them)."""
    flags = []
    not_used = seen["inputs_not_used"]
    if not_used:
        flags.append(f"network: its probabilities use {', '.join(seen['inputs_used'])}; they do not use "
                     f"{', '.join(not_used)}")
    for c in criteria:
        if c.test in not_used:
            flags.append(f"the {c.status.replace('_', ' ')} verdict rests on {c.label} {c.value:g} {c.unit}, which "
                         "the network did not see: its probabilities do not reflect this test")
    return flags
