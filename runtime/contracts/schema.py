"""Validation against the JSON Schema files in runtime/contracts/schemas (the single definition of each message)."""

from __future__ import annotations

import json
import re
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from runtime.contracts.errors import SchemaError

try:  # compiled (Rust); wheels for x86_64 and aarch64, so some boards go without it
    import jsonschema_rs
except ImportError:  # pragma: no cover - exercised only where no wheel exists
    jsonschema_rs = None

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
RESULT_SCHEMA = "result-1"
RESULT_SCHEMAS: dict[str, str] = {"result/1": "result-1", "result/2": "result-2"}
"""Every result version ever shipped (the message's `schema`) and its schema file; the server accepts all."""

# RFC 3339 section 5.6 `date-time`, nothing looser: jsonschema checks `date-time` only when an
# optional package is installed, so the check lives here and every validator uses it.
_DATE_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?([Zz]|[+-]([0-9]{2}):([0-9]{2}))")


def is_rfc3339_date_time(value: object) -> bool:
    """True for a strict RFC 3339 date-time with a real calendar date (non-strings pass: `type` checks them)."""
    if not isinstance(value, str):
        return True
    m = _DATE_TIME.fullmatch(value)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        date(year, month, day)
    except ValueError:
        return False
    offset_ok = m.group(9) is None or (int(m.group(9)) <= 23 and int(m.group(10)) <= 59)
    return hour <= 23 and minute <= 59 and second <= 60 and offset_ok  # 60: a leap second


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    checker.checks("date-time")(is_rfc3339_date_time)
    return checker


@lru_cache(maxsize=None)
def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


@lru_cache(maxsize=None)
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = _schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=_format_checker())


@lru_cache(maxsize=None)
def _compiled(name: str) -> Any:
    """The same schema file compiled by jsonschema-rs, with the same date-time check; None without
    it. A result/2 with a hundred cells takes jsonschema about 7 ms to walk on the development
    machine and jsonschema-rs under 0.1 ms, which the device pays on every field."""
    if jsonschema_rs is None:
        return None
    return jsonschema_rs.validator_for(_schema(name), formats={"date-time": is_rfc3339_date_time}, validate_formats=True)


def compiled_accepts(message: Any, name: str) -> bool | None:
    """jsonschema-rs's verdict on the message as JSON carries it (numpy numbers become plain ones);
    None when it is not installed or the message is not JSON at all. A message of plain Python values
    (as runtime.analysis.result builds them) is read as it is, without a JSON round trip (0.2 ms
    for a result/2 of a hundred cells)."""
    compiled = _compiled(name)
    if compiled is None:
        return None
    try:
        if compiled.is_valid(message):  # plain values, as results are built: no JSON round trip
            return True
    except ValueError:  # a value jsonschema-rs does not read (numpy numbers): judged as JSON below
        pass
    try:
        plain = json.loads(json.dumps(message))
    except (TypeError, ValueError):
        return None
    return bool(compiled.is_valid(plain))


def schema_for(message: Any) -> str:
    """The schema file a result message names in its `schema` field (result-1 when it names none known)."""
    version = message.get("schema") if isinstance(message, dict) else None
    return RESULT_SCHEMAS.get(version, RESULT_SCHEMA) if isinstance(version, str) else RESULT_SCHEMA


def schema_errors(message: Any, name: str | None = None) -> list[str]:
    """Every violation as 'path: problem', sorted; empty when the message is valid. Without a
    `name`, the result version the message names. A message the compiled check accepts is valid
    (both implement the schema's draft; tests hold them to one verdict on every kind of bad
    message); otherwise jsonschema writes the list."""
    name = name or schema_for(message)
    if compiled_accepts(message, name):
        return []
    errors = []
    for err in _validator(name).iter_errors(message):
        path = "/".join(str(p) for p in err.absolute_path) or "(root)"
        errors.append(f"{path}: {err.message}")
    return sorted(errors)


def validate(message: Any, name: str | None = None) -> None:
    """Raise SchemaError listing every violation of the named schema (default: the one the message names)."""
    name = name or schema_for(message)
    errors = schema_errors(message, name)
    if errors:
        raise SchemaError(f"{name}: " + "; ".join(errors))
