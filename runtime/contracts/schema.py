"""Validation against the JSON Schema files in runtime/contracts/schemas (the single definition of each message)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from runtime.contracts.errors import SchemaError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
RESULT_SCHEMA = "result-1"
RESULT_SCHEMAS: dict[str, str] = {"result/1": "result-1", "result/2": "result-2"}
"""Every result version ever shipped (the message's `schema`) and its schema file; the server accepts all."""


@lru_cache(maxsize=None)
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_for(message: Any) -> str:
    """The schema file a result message names in its `schema` field (result-1 when it names none known)."""
    version = message.get("schema") if isinstance(message, dict) else None
    return RESULT_SCHEMAS.get(version, RESULT_SCHEMA) if isinstance(version, str) else RESULT_SCHEMA


def schema_errors(message: Any, name: str | None = None) -> list[str]:
    """Every violation as 'path: problem', sorted; empty when the message is valid. Without a
    `name`, the result version the message names."""
    name = name or schema_for(message)
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
