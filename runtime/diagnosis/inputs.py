"""Patient inputs: one typed record, built from the batch column names, checked against
plausibility bounds that name the offending field.

The batch CSV columns, the device's sample lab values and the CLI options all use the same names
(units in the names, e.g. `fpg_mmol_l`, `hba1c_pct`), so there is one parser for all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from runtime.diagnosis.tables import TESTS
from runtime.diagnosis.units import (
    GLUCOSE_UNITS, HBA1C_UNITS, MMOL_L, PERCENT, InputError, Measurement, parse_unit,
)
from runtime.contracts.errors import DataError
from runtime.contracts.plausible import UNIT_SUFFIXES as PLAUSIBLE_UNIT_SUFFIXES, check_lab

#: Unit suffixes of the lab-test columns, e.g. fpg_mg_dl.
UNIT_SUFFIXES = PLAUSIBLE_UNIT_SUFFIXES
#: Plain numeric fields; their plausible ranges are in runtime.contracts.plausible.LABS (one table).
NUMERIC_FIELDS: tuple[str, ...] = (
    "age", "bmi", "pregnancies", "diastolic_bp_mmhg", "triceps_skinfold_mm", "insulin_2h_uu_ml",
    "diabetes_pedigree", "urea_mmol_l", "creatinine_umol_l", "cholesterol_mmol_l", "triglycerides_mmol_l",
    "hdl_mmol_l", "ldl_mmol_l", "vldl_mmol_l", "c_peptide_pmol_l", "haemoglobin_g_l",
)
BINARY_FIELDS = (
    "pregnant", "symptoms", "gad_positive", "ia2_positive", "znt8_positive", "ketones",
    "haemoglobinopathy", "recent_transfusion", "recent_blood_loss", "haemodialysis", "erythropoietin",
)
SMEAR_FIELDS: Mapping[str, tuple[float, float, bool]] = MappingProxyType({
    "rbc_per_field": (0.0, 1e6, True),
    "wbc_per_field": (0.0, 1e6, True),
    "platelet_per_field": (0.0, 1e6, True),
    "rbc_area_pct": (0.0, 100.0, True),
    "mean_rbc_diameter_um": (0.0, 50.0, False),
    "rbc_diameter_cv_pct": (0.0, 100.0, True),
    "field_area_um2": (0.0, 1e9, False),
    "smear_fields": (1.0, 1e6, True),
})
_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n"}


class InvalidInputs(DataError):
    """One or more input fields are unusable; `errors` lists each with its field name."""

    def __init__(self, errors: list[InputError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class PatientInputs:
    """Everything the engine and the network may use; None means unknown."""

    age: float | None = None
    sex: str | None = None  # "F" | "M"
    bmi: float | None = None
    pregnant: bool | None = None
    pregnancies: float | None = None
    symptoms: bool | None = None
    fpg: Measurement | None = None
    ogtt_1h: Measurement | None = None
    ogtt_2h: Measurement | None = None
    random_glucose: Measurement | None = None
    hba1c: Measurement | None = None
    diastolic_bp_mmhg: float | None = None
    triceps_skinfold_mm: float | None = None
    insulin_2h_uu_ml: float | None = None
    diabetes_pedigree: float | None = None
    urea_mmol_l: float | None = None
    creatinine_umol_l: float | None = None
    cholesterol_mmol_l: float | None = None
    triglycerides_mmol_l: float | None = None
    hdl_mmol_l: float | None = None
    ldl_mmol_l: float | None = None
    vldl_mmol_l: float | None = None
    c_peptide_pmol_l: float | None = None
    gad_positive: bool | None = None
    ia2_positive: bool | None = None
    znt8_positive: bool | None = None
    ketones: bool | None = None
    haemoglobin_g_l: float | None = None
    haemoglobinopathy: bool | None = None
    recent_transfusion: bool | None = None
    recent_blood_loss: bool | None = None
    haemodialysis: bool | None = None
    erythropoietin: bool | None = None

    def __post_init__(self) -> None:
        errors = list(_check_record(self))
        if errors:
            raise InvalidInputs(errors)

    def measurement(self, test: str) -> Measurement | None:
        return getattr(self, test)

    @property
    def is_pregnant(self) -> bool:
        return bool(self.pregnant)


def measurement_field(test: str, unit: str) -> str:
    """The column name of a test in a unit: ("fpg", "mg/dL") -> "fpg_mg_dl"."""
    suffix = next(k for k, v in UNIT_SUFFIXES.items() if v == unit)
    return f"{test}_{suffix}"


def out_of_bounds(value: float, low: float, high: float, low_inclusive: bool) -> bool:
    return not math.isfinite(value) or value > high or value < low or (value == low and not low_inclusive)


def bounds_text(low: float, high: float, low_inclusive: bool) -> str:
    return f"{'>=' if low_inclusive else '>'} {low:g} and <= {high:g}"


def _check_record(p: PatientInputs) -> Iterable[InputError]:
    for test in TESTS:
        m = p.measurement(test)
        if m is None:
            continue
        name = measurement_field(test, m.unit) if m.unit in UNIT_SUFFIXES.values() else test
        allowed = HBA1C_UNITS if test == "hba1c" else GLUCOSE_UNITS
        if m.unit not in allowed:
            yield InputError(name, f"unknown unit {m.unit!r} (use {' or '.join(allowed)})")
            continue
        problem = check_lab(measurement_field(test, m.unit), m.value)
        if problem is not None:
            yield InputError(name, problem.partition(": ")[2])
    for name in NUMERIC_FIELDS:
        value = getattr(p, name)
        if value is not None and (problem := check_lab(name, value)) is not None:
            yield InputError(name, problem.partition(": ")[2])
    if p.sex is not None and p.sex not in ("F", "M"):
        yield InputError("sex", f"unknown sex {p.sex!r} (use F or M)")
    if p.pregnant and p.sex == "M":
        yield InputError("pregnant", "pregnant is 1 but sex is M")


# ---------------------------------------------------------------------------------------------
# Parsing from column names


def parse_float(field: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise InputError(field, f"not a number: {raw!r}")
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        try:
            value = float(str(raw).strip())
        except ValueError:
            raise InputError(field, f"not a number: {str(raw)!r}") from None
    if not math.isfinite(value):
        raise InputError(field, f"not a finite number: {raw!r}")
    return value


def _parse_bool(field: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1.0",):
        return True
    if text in ("0.0",):
        return False
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InputError(field, f"expected 0 or 1, got {str(raw)!r}")


def _parse_sex(raw: Any) -> str:
    text = str(raw).strip().upper()
    mapped = {"F": "F", "FEMALE": "F", "W": "F", "M": "M", "MALE": "M"}.get(text)
    if mapped is None:
        raise InputError("sex", f"unknown sex {str(raw)!r} (use F or M)")
    return mapped


def _parse_with_unit(field: str, raw: Any, default_unit: str, allowed: tuple[str, ...]) -> Measurement:
    """'7.0', 7.0 or '126 mg/dL' -> Measurement; the unit in the text wins over the default."""
    text = str(raw).strip()
    number, _, unit_text = text.partition(" ")
    if not unit_text:
        # also accept '126mg/dL'
        i = 0
        while i < len(text) and (text[i].isdigit() or text[i] in ".-+eE"):
            i += 1
        number, unit_text = text[:i], text[i:]
        if not number.strip("+-.eE"):  # no number in front: 'abc', 'nan', 'inf' are not units
            return Measurement(parse_float(field, text), default_unit)
    unit = parse_unit(unit_text, allowed, field) if unit_text.strip() else default_unit
    return Measurement(parse_float(field, number if unit_text.strip() else text), unit)


def is_blank(raw: Any) -> bool:
    return raw is None or (isinstance(raw, str) and raw.strip() == "") or (isinstance(raw, float) and math.isnan(raw))


def classify_column(name: str) -> str:
    """'patient', 'smear', 'test' (a lab test with a unit suffix) or 'other'; raises for a lab
    test column whose unit suffix is unknown (e.g. fpg_g_l)."""
    key = name.strip()
    if key in NUMERIC_FIELDS or key in BINARY_FIELDS or key == "sex" or key in TESTS:
        return "patient"
    if key in SMEAR_FIELDS:
        return "smear"
    for test in sorted(TESTS, key=len, reverse=True):
        if key.startswith(test + "_"):
            suffix = key[len(test) + 1:]
            allowed = HBA1C_UNITS if test == "hba1c" else GLUCOSE_UNITS
            unit = UNIT_SUFFIXES.get(suffix)
            if unit is None or unit not in allowed:
                known = ", ".join(measurement_field(test, u) for u in allowed)
                raise InputError(key, f"unknown unit {suffix!r} for {test} (use {known})")
            return "test"
    return "other"


def patient_inputs_from_mapping(
    values: Mapping[str, Any], *, glucose_unit: str = MMOL_L, hba1c_unit: str = PERCENT,
) -> PatientInputs:
    """Build PatientInputs from batch column names (`fpg_mmol_l`, `hba1c_pct`, `sex`, ...).

    Bare test names (`fpg`, `hba1c`, ...) take a number with an optional unit ('126 mg/dL'), else
    `glucose_unit` / `hba1c_unit`. Blank cells are unknown; keys that are not inputs are ignored.
    Raises InvalidInputs listing every unusable field by name.
    """
    glucose_unit = parse_unit(glucose_unit, GLUCOSE_UNITS, "glucose_unit")
    hba1c_unit = parse_unit(hba1c_unit, HBA1C_UNITS, "hba1c_unit")
    errors: list[InputError] = []
    kwargs: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, raw in values.items():
        try:
            kind = classify_column(key)
            if kind in ("other", "smear") or is_blank(raw):
                continue
            key = key.strip()
            if key == "sex":
                kwargs["sex"] = _parse_sex(raw)
            elif key in BINARY_FIELDS:
                kwargs[key] = _parse_bool(key, raw)
            elif key in NUMERIC_FIELDS:
                kwargs[key] = parse_float(key, raw)
            else:
                if kind == "test":
                    test = next(t for t in sorted(TESTS, key=len, reverse=True) if key.startswith(t + "_"))
                    m = Measurement(parse_float(key, raw), UNIT_SUFFIXES[key[len(test) + 1:]])
                else:
                    test = key
                    allowed = HBA1C_UNITS if test == "hba1c" else GLUCOSE_UNITS
                    m = _parse_with_unit(key, raw, hba1c_unit if test == "hba1c" else glucose_unit, allowed)
                if test in kwargs:
                    raise InputError(key, f"{test} is also given as {sources[test]}; give it in one unit only")
                kwargs[test] = m
                sources[test] = key
        except InputError as exc:
            errors.append(exc)
    if errors:
        raise InvalidInputs(errors)
    return PatientInputs(**kwargs)


PATIENT_FIELD_NAMES = tuple(f.name for f in fields(PatientInputs))
