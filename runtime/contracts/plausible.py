"""One table of plausible ranges for lab values and calibrations, shared by the device, `diagnose`,
the batch reader and the server.

A value outside its range is refused with the range named and, where the number fits another unit
of the same test, the likely unit mistake named ("fpg 7 mg/dL is not plausible ...: did you mean
7 mmol/L?"). Each lab column carries its unit in its name (`fpg_mmol_l`, `hba1c_pct`), so every
range is stated in the column's own unit and no conversion is needed to check one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from runtime.contracts.errors import ConfigError

#: Lab-column unit suffixes and the unit names they stand for.
UNIT_SUFFIXES: Mapping[str, str] = MappingProxyType({
    "mmol_l": "mmol/L", "mg_dl": "mg/dL", "pct": "%", "mmol_mol": "mmol/mol",
})
#: Tests whose value column carries its unit (fpg_mmol_l / fpg_mg_dl ...), by unit suffix.
TEST_UNITS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "fpg": ("mmol_l", "mg_dl"),
    "ogtt_1h": ("mmol_l", "mg_dl"),
    "ogtt_2h": ("mmol_l", "mg_dl"),
    "random_glucose": ("mmol_l", "mg_dl"),
    "hba1c": ("pct", "mmol_mol"),
})


@dataclass(frozen=True)
class PlausibleRange:
    """[low, high] in `unit` (low excluded when `low_inclusive` is False).

    `other_units`: (unit, factor) pairs of units this value is often entered in by mistake; a value
    v that is out of range while v x factor is in range is named as that mistake.
    """

    low: float
    high: float
    unit: str = ""
    low_inclusive: bool = True
    other_units: tuple[tuple[str, float], ...] = ()

    def contains(self, value: float) -> bool:
        if not math.isfinite(value) or value > self.high or value < self.low:
            return False
        return self.low_inclusive or value != self.low

    def text(self) -> str:
        low = f"{self.low:g}" if self.low_inclusive else f"above {self.low:g}"
        return f"{low}-{self.high:g}{' ' + self.unit if self.unit else ''}"


def _glucose(unit: str) -> PlausibleRange:
    # 1-60 mmol/L: below is not compatible with consciousness, above has not been reported alive.
    return PlausibleRange(1.0, 60.0, unit) if unit == "mmol/L" else PlausibleRange(18.0, 1081.0, unit)


#: Lab values by column name. Glucose in both units covers the same span (1-60 mmol/L);
#: HbA1c 3-25 % is 9-250 mmol/mol (IFCC-NGSP master equation).
LABS: Mapping[str, PlausibleRange] = MappingProxyType({
    **{f"{test}_{suffix}": _glucose(UNIT_SUFFIXES[suffix]) for test, suffixes in TEST_UNITS.items()
       if test != "hba1c" for suffix in suffixes},
    "hba1c_pct": PlausibleRange(3.0, 25.0, "%"),
    "hba1c_mmol_mol": PlausibleRange(9.0, 250.0, "mmol/mol"),
    "age": PlausibleRange(0.0, 130.0, "years"),
    "bmi": PlausibleRange(8.0, 150.0, "kg/m²"),
    "pregnancies": PlausibleRange(0.0, 30.0),
    "diastolic_bp_mmhg": PlausibleRange(20.0, 250.0, "mmHg"),
    "triceps_skinfold_mm": PlausibleRange(0.0, 150.0, "mm", low_inclusive=False),
    "insulin_2h_uu_ml": PlausibleRange(0.0, 5000.0, "µU/mL", low_inclusive=False),
    "diabetes_pedigree": PlausibleRange(0.0, 10.0),
    "urea_mmol_l": PlausibleRange(0.0, 150.0, "mmol/L", low_inclusive=False),
    "creatinine_umol_l": PlausibleRange(10.0, 3000.0, "µmol/L", other_units=(("mg/dL", 88.4),)),
    "cholesterol_mmol_l": PlausibleRange(0.5, 50.0, "mmol/L", other_units=(("mg/dL", 1 / 38.67),)),
    "triglycerides_mmol_l": PlausibleRange(0.05, 100.0, "mmol/L", other_units=(("mg/dL", 1 / 88.57),)),
    "hdl_mmol_l": PlausibleRange(0.05, 20.0, "mmol/L", other_units=(("mg/dL", 1 / 38.67),)),
    "ldl_mmol_l": PlausibleRange(0.05, 30.0, "mmol/L", other_units=(("mg/dL", 1 / 38.67),)),
    "vldl_mmol_l": PlausibleRange(0.0, 50.0, "mmol/L", low_inclusive=False),
    "c_peptide_pmol_l": PlausibleRange(0.0, 20000.0, "pmol/L"),
    "haemoglobin_g_l": PlausibleRange(30.0, 300.0, "g/L", other_units=(("g/dL", 10.0),)),
})

#: Microscope calibration: below 0.01 µm/px is beyond any optical microscope's resolution, above
#: 10 µm/px a red cell is under one pixel.
CALIBRATION = PlausibleRange(0.01, 10.0, "µm/px", low_inclusive=True)


class ImplausibleValue(ConfigError):
    """A lab value or calibration outside its plausible range; the message names it and the range."""


def lab_column(test: str, unit: str) -> str | None:
    """("fpg", "mg/dL") -> "fpg_mg_dl"; None when the test has no column in that unit."""
    for suffix in TEST_UNITS.get(test, ()):
        if UNIT_SUFFIXES[suffix].lower() == unit.strip().lower():
            return f"{test}_{suffix}"
    return None


def _split(name: str) -> tuple[str, str | None]:
    """fpg_mg_dl -> ("fpg", "mg_dl"); age -> ("age", None)."""
    for test in sorted(TEST_UNITS, key=len, reverse=True):
        if name.startswith(test + "_") and name[len(test) + 1:] in TEST_UNITS[test]:
            return test, name[len(test) + 1:]
    return name, None


def check_lab(name: str, value: Any, unit: str | None = None) -> str | None:
    """The problem with one lab value, or None when it is plausible (or not a lab this table knows).

    `name` is a column name with its unit (`fpg_mmol_l`), or a test name (`fpg`) with `unit`
    ("mg/dL"). Non-numbers, NaN and infinities are problems; booleans are not numbers.
    """
    column = name.strip()
    if unit is not None and column in TEST_UNITS:
        column = lab_column(column, unit) or column
        if column == name.strip():
            return f"{name}: unknown unit {unit!r} (use {' or '.join(UNIT_SUFFIXES[s] for s in TEST_UNITS[name.strip()])})"
    rng = LABS.get(column)
    if rng is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            number = float(str(value).strip())
        except ValueError:
            return f"{column}: not a number: {str(value)!r}"
    else:
        number = float(value)
    if not math.isfinite(number):
        return f"{column}: not a finite number: {value!r}"
    if rng.contains(number):
        return None
    test, _suffix = _split(column)
    shown = f"{test} {number:g} {rng.unit}".rstrip()
    return f"{column}: {shown} is not plausible (expected {rng.text()}){_likely_mistake(test, column, number, rng)}"


def _likely_mistake(test: str, column: str, value: float, rng: PlausibleRange) -> str:
    for suffix in TEST_UNITS.get(test, ()):
        other = f"{test}_{suffix}"
        if other != column and LABS[other].contains(value):
            return f": did you mean {value:g} {LABS[other].unit}?"
    for unit, factor in rng.other_units:
        if rng.contains(value * factor):
            return f": did you mean {value:g} {unit} ({value * factor:.3g} {rng.unit})?"
    return ""


def check_labs(labs: Mapping[str, Any]) -> list[str]:
    """Every problem in a labs mapping (column names as keys). Keys this table does not know pass,
    unless their value is NaN or infinite: no JSON message could carry it."""
    problems = []
    for name, value in labs.items():
        problem = check_lab(str(name), value)
        if problem is None and isinstance(value, float) and not math.isfinite(value):
            problem = f"{name}: not a finite number: {value!r}"
        if problem is not None:
            problems.append(problem)
    return problems


def check_calibration(um_per_px: Any, preprocess: Any | None = None, source: str = "um_per_px") -> float:
    """The calibration as a float, or ImplausibleValue naming it and the range it must lie in.

    With a model card's preprocessing (`target_rbc_diameter_px`, `nominal_rbc_diameter_um`,
    `min_scale`, `max_scale`), a calibration that would need a rescale beyond the card's range is
    refused too, naming both: the model would otherwise run at a clipped, wrong scale.
    """
    if isinstance(um_per_px, bool):
        raise ImplausibleValue(f"{source}: not a number: {um_per_px!r}")
    try:
        value = float(um_per_px)
    except (TypeError, ValueError):
        raise ImplausibleValue(f"{source}: not a number: {um_per_px!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ImplausibleValue(f"{source}: must be a positive finite number of µm per pixel, got {um_per_px!r}")
    if not CALIBRATION.contains(value):
        raise ImplausibleValue(f"{source}: {value:g} µm/px is not a plausible microscope calibration "
                               f"(expected {CALIBRATION.text()})")
    if preprocess is not None:
        low, high = calibration_range(preprocess)
        if not low <= value <= high:
            diameter_px = preprocess.nominal_rbc_diameter_um / value
            raise ImplausibleValue(
                f"{source}: {value:g} µm/px makes a {preprocess.nominal_rbc_diameter_um:g} µm red cell "
                f"{diameter_px:.3g} px across; the model card rescales by {preprocess.min_scale:g}-"
                f"{preprocess.max_scale:g}x to {preprocess.target_rbc_diameter_px:g} px, so it takes "
                f"{low:.3g}-{high:.3g} µm/px")
    return value


def calibration_range(preprocess: Any) -> tuple[float, float]:
    """The µm/px span a model card's scale range can bring to its red-cell size."""
    per_scale = preprocess.nominal_rbc_diameter_um / preprocess.target_rbc_diameter_px
    return preprocess.min_scale * per_scale, preprocess.max_scale * per_scale
