"""Which sample a capture belongs to, the sample's lab values, and a per-sample summary over fields.

A sample (one slide, one patient visit) is usually imaged in several fields. Its context comes
from CLI options or the device config (one sample), from a worklist file (a queue of samples), or
from the server's orders topic (`SampleTracker.set_current`). Patient ids are pseudonymous: with a
site secret configured, whatever reference the worklist gives is replaced by a keyed hash
(HMAC-SHA256), so names or record numbers never leave the device.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from runtime.contracts.classes import CELL_CLASSES, CLASS_NAMES
from runtime.contracts.config import SampleConfig
from runtime.contracts.errors import ConfigError, DataError
from runtime.contracts.csvtable import read_csv_table
from runtime.contracts.ids import uuid7
from runtime.contracts.plausible import ImplausibleValue, check_labs
from runtime.contracts.safe_load import parse_json, read_text_file

MAX_WORKLIST_BYTES = 16 * 1024 * 1024
"""A day's worklist is kilobytes; 16 MiB is far beyond any real one and still cheap to read."""

log = logging.getLogger(__name__)

LabValue = float | str | bool
_RESERVED_COLUMNS = {"sample_id", "patient_id", "fields"}
AUTO_PREFIX = "auto-"  # sample ids the device makes up when no sample was assigned


def pseudonymize(patient_ref: str, secret: bytes) -> str:
    """Keyed hash of a patient reference: stable per site, meaningless without the site secret."""
    digest = hmac.new(secret, patient_ref.strip().encode("utf-8"), hashlib.sha256).hexdigest()
    return f"p-{digest[:32]}"


@dataclass(frozen=True)
class SampleContext:
    """One sample: pseudonymous ids, lab values (units in the key names) and how many fields to image."""

    sample_id: str
    patient_id: str | None = None
    labs: Mapping[str, LabValue] = field(default_factory=dict)
    fields: int = 1

    def __post_init__(self) -> None:
        if not self.sample_id or len(self.sample_id) > 128:
            raise ConfigError(f"sample_id: must be 1-128 characters, got {self.sample_id!r}")
        if self.fields < 1:
            raise ConfigError(f"sample {self.sample_id}: fields must be >= 1, got {self.fields}")
        problems = check_labs(self.labs)
        if problems:
            raise ImplausibleValue(f"sample {self.sample_id}: lab " + "; ".join(problems))


def field_number(field_index: int | None) -> int:
    """The field as people count it (from 1): the demo's table, the overlay files and titles, the
    web app; the message's `field_index` counts from 0."""
    return (field_index or 0) + 1


@dataclass(frozen=True)
class SampleField:
    """One capture's place: which sample, and which field of it (0-based)."""

    context: SampleContext
    field_index: int

    def to_dict(self) -> dict[str, Any]:
        """The `sample` object of a result/1 message."""
        return {
            "sample_id": self.context.sample_id,
            "patient_id": self.context.patient_id,
            "field_index": self.field_index,
            "labs": dict(self.context.labs),
        }


def parse_lab_value(text: str) -> LabValue:
    """'6.1' -> 6.1, 'true' -> True, anything else stays text."""
    value = text.strip()
    if value.lower() in ("true", "yes"):
        return True
    if value.lower() in ("false", "no"):
        return False
    try:
        return float(value)
    except ValueError:
        return value


def parse_lab_options(options: Iterable[str]) -> dict[str, LabValue]:
    """CLI `--lab fpg_mmol_l=6.1` options -> a labs mapping."""
    labs: dict[str, LabValue] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--lab {option!r}: expected NAME=VALUE, e.g. fpg_mmol_l=6.1")
        labs[key.strip()] = parse_lab_value(value)
    return labs


def read_worklist(path: str | Path, secret: bytes | None = None, default_fields: int = 1) -> list[SampleContext]:
    """Samples from a CSV (columns sample_id, patient_id, fields, then lab values) or JSON list."""
    path = Path(path)
    try:
        text = read_text_file(path, "worklist file", MAX_WORKLIST_BYTES)
        rows = _json_rows(path, text) if path.suffix.lower() == ".json" else _csv_rows(path, text)
    except ConfigError as exc:  # the file's own problems (size, encoding, JSON): data, not configuration
        raise DataError(str(exc)) from None
    samples = []
    for number, row in enumerate(rows, start=1):
        where = f"{path}: entry {number}"
        sample_id = str(row.get("sample_id") or "").strip()
        if not sample_id:
            raise DataError(f"{where}: sample_id is missing")
        ref = row.get("patient_id")
        patient_id = None if ref in (None, "") else str(ref)
        if patient_id is not None and secret is not None:
            patient_id = pseudonymize(patient_id, secret)
        try:
            fields = int(row.get("fields") or default_fields)
            samples.append(SampleContext(sample_id, patient_id, dict(row.get("labs") or {}), fields))
        except (ValueError, ConfigError) as exc:
            raise DataError(f"{where}: {exc}") from exc
    if not samples:
        raise DataError(f"{path}: worklist has no samples")
    return samples


def _csv_rows(path: Path, text: str) -> list[dict[str, Any]]:
    table = read_csv_table(path, text)
    if "sample_id" not in table.columns:
        raise DataError(f"{path}: a CSV worklist needs a header row with a sample_id column")
    rows = []
    for row in table.rows:
        labs = {k: parse_lab_value(v) for k, v in row.items() if k not in _RESERVED_COLUMNS and v != ""}
        rows.append({"sample_id": row.get("sample_id"), "patient_id": row.get("patient_id"),
                     "fields": row.get("fields"), "labs": labs})
    return rows


def _json_rows(path: Path, text: str) -> list[dict[str, Any]]:
    data = parse_json(text, str(path))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: a JSON worklist is a list of objects with sample_id, patient_id, fields, labs")
    for number, row in enumerate(data, start=1):
        unknown = set(row) - _RESERVED_COLUMNS - {"labs"}
        if unknown:
            raise DataError(f"{path}: entry {number}: unknown key(s) {', '.join(sorted(unknown))}")
        if not isinstance(row.get("labs", {}), dict):
            raise DataError(f"{path}: entry {number}: labs must be an object")
    return data


class SampleTracker:
    """Hands each capture its sample and field index; moves to the next sample after its fields."""

    def __init__(self, samples: Iterable[SampleContext] = (), auto_fields: int = 1) -> None:
        self._queue = list(samples)
        self._auto_fields = auto_fields
        self._current: SampleContext | None = self._queue.pop(0) if self._queue else None
        self._next_field = 0

    @classmethod
    def from_config(cls, config: SampleConfig) -> "SampleTracker":
        secret = None
        if config.pseudonym_secret_env:
            value = os.environ.get(config.pseudonym_secret_env)
            if not value:
                raise ConfigError(f"sample.pseudonym_secret_env: environment variable {config.pseudonym_secret_env} is not set")
            secret = value.encode("utf-8")
        if config.worklist:  # SampleConfig refuses labs beside a worklist or without a sample
            return cls(read_worklist(config.worklist, secret, config.fields_per_sample), config.fields_per_sample)
        if config.sample_id:
            patient = config.patient_id
            if patient and secret is not None:
                patient = pseudonymize(patient, secret)
            return cls([SampleContext(config.sample_id, patient, dict(config.labs), config.fields_per_sample)],
                       config.fields_per_sample)
        return cls([], config.fields_per_sample)

    @property
    def current(self) -> SampleContext | None:
        return self._current

    def set_current(self, context: SampleContext) -> None:
        """Switch to a sample now (an order from the server, an operator command); fields restart at 0."""
        self._current, self._next_field = context, 0

    def next_field(self) -> SampleField:
        """The sample and field index for the next capture."""
        if self._current is None or self._next_field >= self._current.fields:
            self._advance()
        assert self._current is not None
        placed = SampleField(self._current, self._next_field)
        self._next_field += 1
        return placed

    def _advance(self) -> None:
        if self._queue:
            self._current, self._next_field = self._queue.pop(0), 0
        elif self._current is not None and not self._current.sample_id.startswith(AUTO_PREFIX):
            # Past the planned fields of the last known sample: more fields of the same sample,
            # never a silent switch to an unknown one.
            log.info("sample %s: field %d beyond the %d planned", self._current.sample_id,
                     self._next_field + 1, self._current.fields)
        else:
            self._current, self._next_field = SampleContext(f"{AUTO_PREFIX}{uuid7()}", None, {}, self._auto_fields), 0


@dataclass
class SampleSummary:
    """Running summary of one sample over its fields: totals and means over accepted fields."""

    sample_id: str
    fields: int = 0
    accepted_fields: int = 0
    total_counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in CELL_CLASSES})
    _area_sums: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in CLASS_NAMES})
    _density_sums: dict[str, float] = field(default_factory=dict)
    _density_fields: int = 0
    _field_area_sum_mm2: float = 0.0
    _rbc_area_sum_um2: float = 0.0
    _rbc_area_fields: int = 0
    rejected_reasons: list[str] = field(default_factory=list)

    def add(self, result: Mapping[str, Any]) -> None:
        """Fold one result/1 message of this sample into the summary."""
        quality = result.get("quality") or {}
        self.add_field(bool(quality.get("accepted", False)), quality.get("reasons") or [], result["counts"],
                       result["area_pct"], result.get("derived"))

    def add_field(self, accepted: bool, reasons: Iterable[str], counts: Mapping[str, int],
                  area_pct: Mapping[str, float], derived: Mapping[str, Any] | None) -> None:
        """Fold one field in; rejected fields count as fields but not in the means."""
        self.fields += 1
        if not accepted:
            self.rejected_reasons.extend(reasons)
            return
        self.accepted_fields += 1
        for name in CELL_CLASSES:
            self.total_counts[name] += int(counts[name])
        for name in CLASS_NAMES:
            self._area_sums[name] += float(area_pct[name])
        derived = derived or {}
        density = derived.get("density_per_mm2")
        if density:
            self._density_fields += 1
            self._field_area_sum_mm2 += float(derived["field_area_mm2"])
            for name, value in density.items():
                self._density_sums[name] = self._density_sums.get(name, 0.0) + float(value)
        rbc_area = (derived.get("mean_cell_area_um2") or {}).get("rbc")
        if rbc_area:
            self._rbc_area_sum_um2 += float(rbc_area)
            self._rbc_area_fields += 1

    def to_dict(self) -> dict[str, Any]:
        n = self.accepted_fields
        summary: dict[str, Any] = {
            "sample_id": self.sample_id,
            "fields": self.fields,
            "accepted_fields": n,
            "total_counts": dict(self.total_counts),
            "mean_counts_per_field": {k: round(v / n, 2) for k, v in self.total_counts.items()} if n else None,
            "mean_area_pct": {k: round(v / n, 3) for k, v in self._area_sums.items()} if n else None,
            "rejected_reasons": list(self.rejected_reasons),
        }
        if self._density_fields:
            summary["mean_density_per_mm2"] = {
                k: round(v / self._density_fields, 1) for k, v in self._density_sums.items()
            }
            summary["mean_field_area_mm2"] = round(self._field_area_sum_mm2 / self._density_fields, 6)
        if self._rbc_area_fields:
            summary["mean_rbc_area_um2"] = round(self._rbc_area_sum_um2 / self._rbc_area_fields, 2)
        return summary
