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


@lru_cache(maxsize=None)
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_errors(message: Any, name: str = RESULT_SCHEMA) -> list[str]:
    """Every violation as 'path: problem', sorted; empty when the message is valid."""
    errors = []
    for err in _validator(name).iter_errors(message):
        path = "/".join(str(p) for p in err.absolute_path) or "(root)"
        errors.append(f"{path}: {err.message}")
    return sorted(errors)


def validate(message: Any, name: str = RESULT_SCHEMA) -> None:
    """Raise SchemaError listing every violation of the named schema."""
    errors = schema_errors(message, name)
    if errors:
        raise SchemaError(f"{name}: " + "; ".join(errors))
