"""The shared diabetes tables as network features (names and units from runtime.diagnosis.features).

Pima: zeros in Glucose, BloodPressure, SkinThickness, Insulin and BMI mean "missing" (mask 0);
Outcome 1 = diabetes, 0 = not diabetes (normal or prediabetes: the table cannot tell, so the
target allows both). Iraqi: deduplicated on the clinical values (everything except ID and
No_Pation) before any split; identical clinical rows with different classes are dropped and
counted, since neither label can be trusted.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.diagnosis.features import CLASSES, FEATURES
from runtime.diagnosis.units import mg_dl_to_mmol_l
from runtime.contracts.errors import DataError

PIMA_COLUMNS = {  # table column -> (feature, zero means missing)
    "Pregnancies": ("pregnancies", False),
    "Glucose": ("ogtt_2h_mmol_l", True),
    "BloodPressure": ("diastolic_bp_mmhg", True),
    "SkinThickness": ("triceps_skinfold_mm", True),
    "Insulin": ("insulin_2h_uu_ml", True),
    "BMI": ("bmi", True),
    "DiabetesPedigreeFunction": ("diabetes_pedigree", False),
    "Age": ("age", False),
}
IRAQI_COLUMNS = {
    "AGE": "age", "Urea": "urea_mmol_l", "Cr": "creatinine_umol_l", "HbA1c": "hba1c_pct",
    "Chol": "cholesterol_mmol_l", "TG": "triglycerides_mmol_l", "HDL": "hdl_mmol_l",
    "LDL": "ldl_mmol_l", "VLDL": "vldl_mmol_l", "BMI": "bmi",
}
IRAQI_CLASSES = {"N": 0, "P": 1, "Y": 2}


@dataclass
class Table:
    """values/mask [N, F] in FEATURES order; allowed [N, 3]: the classes each row's label permits;
    label: the stratification label (Pima 0/1, Iraqi 0/1/2)."""

    name: str
    values: np.ndarray
    mask: np.ndarray
    allowed: np.ndarray
    label: np.ndarray
    notes: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, idx: np.ndarray) -> "Table":
        return Table(self.name, self.values[idx], self.mask[idx], self.allowed[idx], self.label[idx], self.notes)

    def column(self, feature: str) -> tuple[np.ndarray, np.ndarray]:
        i = FEATURES.index(feature)
        return self.values[:, i], self.mask[:, i]


def _read(path: Path, required: list[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"{path}: table not found")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in required if not rows or c not in rows[0]]
    if missing:
        raise DataError(f"{path}: missing columns {', '.join(missing)}")
    return rows


def _empty(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n, len(FEATURES)), np.float32), np.zeros((n, len(FEATURES)), np.float32)


def load_pima(path: str | Path) -> Table:
    rows = _read(Path(path), list(PIMA_COLUMNS) + ["Outcome"])
    values, mask = _empty(len(rows))
    label = np.zeros(len(rows), np.int64)
    missing = Counter()
    for r, row in enumerate(rows):
        for col, (feat, zero_missing) in PIMA_COLUMNS.items():
            v = float(row[col])
            if zero_missing and v == 0:
                missing[col] += 1
                continue
            j = FEATURES.index(feat)
            values[r, j] = mg_dl_to_mmol_l(v) if col == "Glucose" else v
            mask[r, j] = 1
        values[r, FEATURES.index("sex_female")] = 1.0  # all Pima participants are women
        mask[r, FEATURES.index("sex_female")] = 1
        label[r] = int(row["Outcome"])
    allowed = np.where(label[:, None] == 1, [0, 0, 1], [1, 1, 0]).astype(np.float32)
    return Table("pima", values, mask, allowed, label,
                 {"rows": len(rows), "zeros_as_missing": dict(missing), "positives": int(label.sum())})


def load_iraqi(path: str | Path) -> Table:
    """Load and deduplicate the Iraqi table (see the module docstring)."""
    rows = _read(Path(path), ["Gender", "CLASS"] + list(IRAQI_COLUMNS))
    groups: dict[tuple, list[str]] = defaultdict(list)
    for row in rows:
        key = (row["Gender"].strip().upper(),) + tuple(float(row[c]) for c in IRAQI_COLUMNS)
        groups[key].append(row["CLASS"].strip().upper())
    kept = [(k, labels[0]) for k, labels in groups.items() if len(set(labels)) == 1]
    conflicting = [k for k, labels in groups.items() if len(set(labels)) > 1]
    values, mask = _empty(len(kept))
    label = np.zeros(len(kept), np.int64)
    zeros = Counter()
    for r, (key, cls) in enumerate(kept):
        gender, *nums = key
        if gender not in ("F", "M"):
            raise DataError(f"{path}: unknown Gender {gender!r}")
        values[r, FEATURES.index("sex_female")] = float(gender == "F")
        mask[r, FEATURES.index("sex_female")] = 1
        for (col, feat), v in zip(IRAQI_COLUMNS.items(), nums):
            if v <= 0:  # none of these can be zero: a zero is a missing value
                zeros[col] += 1
                continue
            j = FEATURES.index(feat)
            values[r, j] = v
            mask[r, j] = 1
        if cls not in IRAQI_CLASSES:
            raise DataError(f"{path}: unknown CLASS {cls!r}")
        label[r] = IRAQI_CLASSES[cls]
    allowed = np.eye(len(CLASSES), dtype=np.float32)[label]
    notes = {
        "rows": len(rows), "unique_clinical_rows": len(groups), "kept": len(kept),
        "duplicates_removed": len(rows) - len(groups),
        "conflicting_groups_dropped": len(conflicting),
        "conflicting_rows_dropped": sum(len(groups[k]) for k in conflicting),
        "zeros_as_missing": dict(zeros),
        "class_counts": {c: int((label == i).sum()) for c, i in IRAQI_CLASSES.items()},
    }
    return Table("iraqi", values, mask, allowed, label, notes)


def load_tables(data_dir: str | Path) -> tuple[Table, Table]:
    data_dir = Path(data_dir)
    return load_pima(data_dir / "pima.csv"), load_iraqi(data_dir / "iraqi.csv")
