"""One reader for the typed sections of a model card (`preprocess`, `inference`).

A card is written by the export and read on the device; a key the device does not know means the
card and the runtime disagree, so it is an error rather than something silently dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from runtime.errors import ConfigError

T = TypeVar("T")


def section_from_dict(cls: type[T], data: Mapping[str, Any], section: str, float_tuples: Iterable[str] = ()) -> T:
    """`cls(**data)` for a frozen dataclass, refusing unknown keys (ConfigError naming `section`)
    and turning the JSON lists named in `float_tuples` back into tuples of floats."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {', '.join(unknown)}")
    values = dict(data)
    for key in float_tuples:
        if key in values:
            values[key] = tuple(float(v) for v in values[key])
    return cls(**values)
