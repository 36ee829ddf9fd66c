"""The one validation engine for files people write: pydantic models and one-line errors.

Every configuration section (device config, server config, model card sections, MQTT settings)
derives from `Section`: unknown keys are refused, types are strict (``"3"`` is not a number, ``yes``
is not true), and the instance is frozen. `validate_section` turns pydantic's report into one
ConfigError line that names the dotted key path, e.g. ``camera.width: must be >= 32, got 0``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from runtime.contracts.errors import ConfigError

S = TypeVar("S", bound="Section")

_short = reprlib.Repr()
_short.maxstring = 40
_short.maxother = 40
_short.maxlist = _short.maxtuple = _short.maxdict = 4
_short.maxlevel = 2


def _list_to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


ListTuple = BeforeValidator(_list_to_tuple)
"""Annotate a tuple field with this: YAML and JSON give lists, the section keeps an immutable tuple."""


class Section(BaseModel):
    """A validated, immutable piece of configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=False, allow_inf_nan=False)
    section_path: ClassVar[str] = ""
    """Where the section sits in its file, for errors of sections constructed in code ("inference")."""

    def __init__(self, /, **data: Any) -> None:
        """Constructed in code, a section checks its values too: bad ones are a ConfigError."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, data, self.section_path, type(self))) from None

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]  # nested sections skip it

    def replace(self: S, **changes: Any) -> S:
        """A copy with some fields changed, validated like the original (ConfigError if not valid)."""
        return validate_section(type(self), {**self.model_dump(exclude_unset=False), **changes})

    def to_plain(self) -> dict[str, Any]:
        """Plain data (lists, not tuples) for printing, YAML and round trips."""
        return self.model_dump(mode="json")


_PATTERN_HINTS: dict[str, str] = {}


def text_matching(pattern: str, hint: str, max_length: int = 4096) -> Any:
    """A text field that must match `pattern`; its error says `hint` (the pattern itself is for the schema)."""
    _PATTERN_HINTS[pattern] = hint
    return Annotated[str, Field(pattern=pattern, max_length=max_length)]


NAME = text_matching(r"^[A-Za-z0-9_.-]{1,64}$", "use 1-64 letters, digits, '_', '.' or '-'")
"""Names that appear in MQTT topics and file names: device ids, sites, client ids."""


def rule(condition: bool, key: str, message: str) -> None:
    """A check across fields inside a model validator; the error is reported at `key`."""
    if not condition:
        raise PydanticCustomError("field_rule", message, {"key": key})


def validate_section(cls: type[S], data: Any, where: str = "") -> S:
    """`cls` from plain data (parsed YAML or JSON); every problem is one ConfigError line.

    `where` prefixes the key paths (``preprocess`` for a card section).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or '(top level)'}: expected a mapping of keys, got {describe_value(data)}")
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, data, where, cls)) from None


def describe_value(value: Any) -> str:
    """A short description of a value for an error line (never the whole of a huge value)."""
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {_short.repr(value)}"


# --------------------------------------------------------------------------- error lines


_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "string_type": "text", "bool_type": "true or false", "bool_parsing": "true or false",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "list_type": "a list", "tuple_type": "a list", "none_required": "null",
}


def describe_errors(exc: ValidationError, data: Any, where: str = "", cls: type[BaseModel] | None = None) -> str:
    """One line for a pydantic report: the first problem, and how many more there are."""
    by_path: dict[str, list[dict[str, Any]]] = {}
    for error in exc.errors(include_url=False):
        by_path.setdefault(_dotted(error, data, where), []).append(error)
    lines = [f"{path}: {_message(errors, path, cls, where)}" for path, errors in by_path.items()]
    more = f" (and {len(lines) - 1} more problem{'s' if len(lines) > 2 else ''})" if len(lines) > 1 else ""
    return lines[0] + more


def _dotted(error: dict[str, Any], data: Any, where: str) -> str:
    """The key path as a person wrote it: the `type` tags and union branch names pydantic adds dropped."""
    parts: list[str] = [where] if where else []
    current: Any = data
    loc = list(error["loc"])
    tag_seen = False  # a tagged union's tag comes right after its field, once per mapping
    for i, item in enumerate(loc):
        last = i == len(loc) - 1
        mapping = isinstance(current, Mapping)
        if mapping and not tag_seen and not last and current.get("type") == item:
            tag_seen = True  # the discriminator's tag
        elif isinstance(item, int) and isinstance(current, (list, tuple)):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
            current = current[item] if 0 <= item < len(current) else None
            tag_seen = False
        elif mapping and item in current:
            parts.append(str(item))
            current = current[item]
            tag_seen = False
        elif last and mapping and error["type"] in ("missing", "extra_forbidden"):
            parts.append(str(item))
        # else: a union branch name ('int', 'str', 'function-after[...]'): not part of the key path
    if error["type"] == "field_rule" and (error.get("ctx") or {}).get("key"):
        parts.append(error["ctx"]["key"])
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        parts.append("type")
    return ".".join(parts) or "(top level)"


def _message(errors: list[dict[str, Any]], path: str, cls: type[BaseModel] | None, where: str) -> str:
    first = errors[0]
    kind, ctx, value = first["type"], first.get("ctx") or {}, first.get("input")
    if all(e["type"] in _TYPE_WORDS for e in errors):
        words = " or ".join(dict.fromkeys(_TYPE_WORDS[e["type"]] for e in errors))
        return f"expected {words}, got {describe_value(value)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(cls, path, where)
        return "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if kind == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r}; one of {_tags(ctx)}"
    if kind == "union_tag_not_found":
        return "required key is missing"
    if kind == "literal_error":
        return f"must be one of {_tags({'expected_tags': ctx.get('expected', '')})}, got {_short.repr(value)}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        bound = f"{bound:g}" if isinstance(bound, float) else bound
        return f"must be {sign} {bound}, got {_short.repr(value)}"
    if kind in ("too_short", "string_too_short"):
        return f"must not be empty, got {_short.repr(value)}" if ctx.get("min_length", 1) <= 1 else \
            f"needs at least {ctx.get('min_length')} items, got {_short.repr(value)}"
    if kind in ("too_long", "string_too_long"):
        limit = ctx.get("max_length")
        return f"at most {limit} {'characters' if kind == 'string_too_long' else 'items'}, got {len(value)}"
    if kind == "string_pattern_mismatch":
        hint = _PATTERN_HINTS.get(str(ctx.get("pattern")), f"must match {ctx.get('pattern')}")
        return f"{hint}, got {_short.repr(value)}"
    if kind == "field_rule":
        return first["msg"]
    if kind == "value_error":
        return str(ctx.get("error", first["msg"]))
    if kind == "multiple_of":
        return f"must be a multiple of {ctx.get('multiple_of')}, got {_short.repr(value)}"
    if kind in ("finite_number",):
        return f"must be a finite number, got {_short.repr(value)}"
    msg = first["msg"]
    return msg[:1].lower() + msg[1:] + f", got {describe_value(value)}"


def _tags(ctx: dict[str, Any]) -> str:
    return str(ctx.get("expected_tags", "")).replace("'", "").replace(" or ", ", ")


def _allowed_keys(cls: type[BaseModel] | None, path: str, where: str) -> list[str]:
    """The keys the section at `path` allows (only when the section is not a tagged union's branch)."""
    if cls is None:
        return []
    keys = path.split(".")[len(where.split(".")) if where else 0:]
    model: Any = cls
    for key in keys[:-1]:
        field = getattr(model, "model_fields", {}).get(key.split("[")[0])
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return list(model.model_fields)

