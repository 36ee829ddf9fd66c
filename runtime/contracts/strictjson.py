"""JSON as the standard defines it, for files a person gives the device (worklists, labs).

Python's json module accepts NaN and Infinity and keeps the last of two equal keys; either would
carry a value the sender did not mean (or lose one) without a word. Here both are errors.
"""

from __future__ import annotations

import json
from typing import Any


class StrictJSONError(ValueError):
    """Not standard JSON, or an object with a key given twice."""


def _no_constants(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJSONError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def loads_strict(text: str) -> Any:
    """json.loads without NaN/Infinity and without duplicate keys; StrictJSONError otherwise
    (json.JSONDecodeError, a ValueError too, for malformed text)."""
    return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
