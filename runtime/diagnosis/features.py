"""The diagnosis network's inputs: one ordered list of features in canonical units, each with a
presence mask, built from PatientInputs. Training builds the same named features from its tables,
so the order and units are defined only here."""

from __future__ import annotations

from dataclasses import fields
from typing import Callable

import numpy as np

from runtime.diagnosis.inputs import PatientInputs
from runtime.diagnosis.units import glucose_mmol_l, hba1c_pct

_GETTERS: dict[str, Callable[[PatientInputs], float | None]] = {
    "age": lambda p: p.age,
    "sex_female": lambda p: None if p.sex is None else float(p.sex == "F"),
    "bmi": lambda p: p.bmi,
    "pregnancies": lambda p: p.pregnancies,
    "ogtt_2h_mmol_l": lambda p: None if p.ogtt_2h is None else glucose_mmol_l(p.ogtt_2h),
    "diastolic_bp_mmhg": lambda p: p.diastolic_bp_mmhg,
    "triceps_skinfold_mm": lambda p: p.triceps_skinfold_mm,
    "insulin_2h_uu_ml": lambda p: p.insulin_2h_uu_ml,
    "diabetes_pedigree": lambda p: p.diabetes_pedigree,
    "hba1c_pct": lambda p: None if p.hba1c is None else hba1c_pct(p.hba1c),
    "urea_mmol_l": lambda p: p.urea_mmol_l,
    "creatinine_umol_l": lambda p: p.creatinine_umol_l,
    "cholesterol_mmol_l": lambda p: p.cholesterol_mmol_l,
    "triglycerides_mmol_l": lambda p: p.triglycerides_mmol_l,
    "hdl_mmol_l": lambda p: p.hdl_mmol_l,
    "ldl_mmol_l": lambda p: p.ldl_mmol_l,
    "vldl_mmol_l": lambda p: p.vldl_mmol_l,
}
FEATURES: tuple[str, ...] = tuple(_GETTERS)
#: The PatientInputs field behind each feature (the names a person gives: fpg, hba1c, age ...).
FEATURE_INPUTS: dict[str, str] = {
    name: {"sex_female": "sex", "ogtt_2h_mmol_l": "ogtt_2h", "hba1c_pct": "hba1c"}.get(name, name) for name in FEATURES
}
CLASSES: tuple[str, ...] = ("normal", "prediabetes", "diabetes")


def feature_vector(p: PatientInputs, *, exclude_hba1c: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(values, mask) float32 arrays of len(FEATURES); a missing value is 0 with mask 0.
    HbA1c is masked out when it is unreliable for this patient."""
    values = np.zeros(len(FEATURES), dtype=np.float32)
    mask = np.zeros(len(FEATURES), dtype=np.float32)
    for i, name in enumerate(FEATURES):
        if exclude_hba1c and name == "hba1c_pct":
            continue
        v = _GETTERS[name](p)
        if v is not None:
            values[i] = v
            mask[i] = 1.0
    return values, mask


def network_view(p: PatientInputs, *, exclude_hba1c: bool = False) -> dict[str, list[str]]:
    """Which of the patient's given inputs the network takes, and which it cannot use (not among its
    features, or HbA1c set aside as unreliable): its probabilities say nothing about the latter."""
    _values, mask = feature_vector(p, exclude_hba1c=exclude_hba1c)
    used = [FEATURE_INPUTS[name] for name, present in zip(FEATURES, mask) if present]
    given = [f.name for f in fields(p) if getattr(p, f.name) is not None]
    return {"inputs_used": used, "inputs_not_used": [name for name in given if name not in used]}
