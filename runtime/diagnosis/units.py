"""Units for glucose and HbA1c: names, parsing and the two conversions the guidelines use.

Values are compared with a guideline's cut-point in the unit they were entered in (126 mg/dL is
diabetes even though it converts to 6.99 mmol/L), so conversion is only used where a value must be
expressed in another unit (network features, display), never to decide a category.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.contracts.errors import DataError

MMOL_L = "mmol/L"
MG_DL = "mg/dL"
PERCENT = "%"
MMOL_MOL = "mmol/mol"

GLUCOSE_UNITS = (MMOL_L, MG_DL)
HBA1C_UNITS = (PERCENT, MMOL_MOL)

#: mg/dL = mmol/L x 18.016 (molar mass of glucose 180.16 g/mol / 10).
MG_DL_PER_MMOL_L = 18.016
#: IFCC-NGSP master equation: mmol/mol = 10.929 x (% - 2.15).
IFCC_SLOPE = 10.929
IFCC_NGSP_OFFSET = 2.15

_ALIASES = {
    "mmol/l": MMOL_L, "mmol_l": MMOL_L, "mmoll": MMOL_L, "mmol": MMOL_L,
    "mg/dl": MG_DL, "mg_dl": MG_DL, "mgdl": MG_DL,
    "%": PERCENT, "pct": PERCENT, "percent": PERCENT, "ngsp": PERCENT,
    "mmol/mol": MMOL_MOL, "mmol_mol": MMOL_MOL, "ifcc": MMOL_MOL,
}


class InputError(DataError):
    """One input value is unusable; `field` names it (a batch column or CLI option)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


def parse_unit(text: str, allowed: tuple[str, ...], field: str) -> str:
    """Canonical unit name for `text`, or an InputError naming the field and the allowed units."""
    unit = _ALIASES.get(text.strip().lower().replace(" ", ""))
    if unit is None or unit not in allowed:
        raise InputError(field, f"unknown unit {text!r} (use {' or '.join(allowed)})")
    return unit


@dataclass(frozen=True)
class Measurement:
    """A lab value with the unit it was entered in."""

    value: float
    unit: str

    def __str__(self) -> str:
        return f"{self.value:g} {self.unit}"


def mmol_l_to_mg_dl(mmol_l: float) -> float:
    return mmol_l * MG_DL_PER_MMOL_L


def mg_dl_to_mmol_l(mg_dl: float) -> float:
    return mg_dl / MG_DL_PER_MMOL_L


def pct_to_mmol_mol(pct: float) -> float:
    return IFCC_SLOPE * (pct - IFCC_NGSP_OFFSET)


def mmol_mol_to_pct(mmol_mol: float) -> float:
    return mmol_mol / IFCC_SLOPE + IFCC_NGSP_OFFSET


def glucose_mmol_l(m: Measurement) -> float:
    """A glucose measurement expressed in mmol/L."""
    return m.value if m.unit == MMOL_L else mg_dl_to_mmol_l(m.value)


def hba1c_pct(m: Measurement) -> float:
    """An HbA1c measurement expressed in % (NGSP)."""
    return m.value if m.unit == PERCENT else mmol_mol_to_pct(m.value)
