"""FIELD=NUMBER overrides of a settings section (a dataclass such as the counting rules, or a card
section such as the inference plan), as `smearscope evaluate --rule/--plan` and
`training.rule_search score` take them: one parser, so both read the same strings the same way."""

from __future__ import annotations

import dataclasses

from runtime.contracts.errors import ConfigError


class OverrideError(ConfigError):
    """A FIELD=NUMBER string names no numeric field of the section, or its value is not a number
    of the field's kind."""


def numeric_fields(section: type) -> dict[str, type]:
    """The section's numeric fields and their kinds (int or float), for a dataclass or a pydantic model."""
    if hasattr(section, "model_fields"):  # a card section (pydantic)
        kinds = {name: f.annotation for name, f in section.model_fields.items()}
    else:
        kinds = {f.name: {"float": float, "int": int}.get(f.type, f.type) for f in dataclasses.fields(section)}
    return {name: kind for name, kind in kinds.items() if kind in (float, int)}


def numeric_overrides(items: tuple[str, ...] | list[str], section: type) -> dict[str, float | int]:
    """FIELD=VALUE strings -> {field: number} for the section's numeric fields (whole numbers for
    integer fields, e.g. the plan's refinements); raises OverrideError naming the fields that can be set."""
    kinds = numeric_fields(section)
    out: dict[str, float | int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in kinds:
            raise OverrideError(f"{item!r}: expected FIELD=NUMBER with FIELD one of {', '.join(sorted(kinds))}")
        try:
            out[name] = kinds[name](value)
        except ValueError:
            kind = "a whole number" if kinds[name] is int else "a number"
            raise OverrideError(f"{item!r}: {value!r} is not {kind}") from None
    return out
