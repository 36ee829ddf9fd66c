"""Checks every incoming message before it may touch the store.

Order: size (before decoding anything), topic, strict UTF-8, strict JSON (no NaN/Infinity, no
number that overflows to infinity, no duplicate keys, at most MAX_DEPTH levels, no text a database
cannot hold: U+0000 or an unpaired surrogate), schema version, the full schema of that version (result/1 or
result/2, with their integer maxima and strict RFC 3339 `date-time`), device identity, then the sample's lab values
against the diagnosis inputs' plausible ranges (the one table the device and `diagnose` use). The broker's ACL
(`pattern write smearscope/v1/+/%u/results`, with the certificate's CN as user name) guarantees that
the topic's device is the authenticated user; this module checks the payload's device_id against
the topic, which closes the chain: topic device = payload device = authenticated user.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from runtime.contracts.schema import RESULT_SCHEMAS, schema_errors
from runtime.delivery.topics import Topic, TopicError, parse
from runtime.diagnosis.inputs import InvalidInputs, patient_inputs_from_mapping
from runtime.diagnosis.units import InputError
from runtime.contracts.safe_load import loads_strict_json

SCHEMA_VERSION = "result/2"
"""The version devices build now; every version in RESULT_SCHEMAS is accepted."""
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: Nesting deeper than this is refused (a result is four levels deep; `derived` and `diagnosis` a few more).
MAX_DEPTH = 32
_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class Accepted:
    """A valid result with its canonical content hash (identical resends hash the same)."""

    topic: Topic
    result: dict[str, Any]
    canonical: str
    content_sha256: str


@dataclass(frozen=True)
class Rejected:
    """Why a message was refused; `result_id` when one could be read, so the device can settle it."""

    reason: str
    detail: str
    topic: Topic | None
    result_id: str | None


def loads_strict(text: str) -> Any:
    """JSON as RFC 8259 means it (runtime.contracts.safe_load), and only what a database can store;
    ValueError names the problem."""
    value = loads_strict_json(text)
    # U+0000 and surrogates can only come from \u escapes (strict UTF-8 and JSON refuse them raw), and
    # nesting needs brackets: most messages need no walk at all.
    if "\\u" in text or text.count("{") + text.count("[") > MAX_DEPTH:
        _check_storable(value, 0)
    return value


def _check_storable(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        bad = _UNSTORABLE_CHAR.search(value)
        if bad:
            raise ValueError(f"string contains U+{ord(bad.group()):04X}, which cannot be stored as text")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key, depth + 1)
            _check_storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item, depth + 1)


def canonical_json(result: dict[str, Any]) -> str:
    return json.dumps(result, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def check_message(topic: str, payload: bytes, max_bytes: int) -> Accepted | Rejected:
    """Validate one message from `topic`; never raises for bad input."""
    try:
        parsed_topic: Topic | None = parse(topic)
    except TopicError as exc:
        return Rejected("bad_topic", str(exc), None, None)
    if parsed_topic.kind != "results":
        return Rejected("bad_topic", f"not a results topic: {topic}", parsed_topic, None)
    if len(payload) > max_bytes:
        return Rejected("too_large", f"{len(payload)} bytes > limit {max_bytes}", parsed_topic, _sniff_id(payload))
    try:
        text = payload.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        return Rejected("not_utf8", f"invalid UTF-8 at byte {exc.start}", parsed_topic, None)
    try:
        message = loads_strict(text)
    except (ValueError, RecursionError) as exc:
        return Rejected("not_json", str(exc)[:200], parsed_topic, _sniff_id(payload))
    result_id = _id_of(message)
    if not isinstance(message, dict):
        return Rejected("not_json", "top level is not an object", parsed_topic, None)
    schema_file = RESULT_SCHEMAS.get(message.get("schema")) if isinstance(message.get("schema"), str) else None
    if schema_file is None:
        return Rejected("schema_version", f"schema {message.get('schema')!r} is not one of {', '.join(RESULT_SCHEMAS)}",
                        parsed_topic, result_id)
    errors = schema_errors(message, schema_file)
    if errors:
        return Rejected("schema", "; ".join(errors)[:500], parsed_topic, result_id)
    if message["device_id"] != parsed_topic.device:
        return Rejected("device_mismatch",
                        f"payload device_id {message['device_id']!r} != topic device {parsed_topic.device!r}",
                        parsed_topic, result_id)
    implausible = _implausible_labs(message["sample"].get("labs"))
    if implausible:
        return Rejected("implausible", implausible[:500], parsed_topic, result_id)
    canonical = canonical_json(message)
    return Accepted(parsed_topic, message, canonical, hashlib.sha256(canonical.encode("utf-8")).hexdigest())


def _implausible_labs(labs: dict[str, Any] | None) -> str:
    """Lab values outside the plausible ranges would mislead trends; '' when all are usable."""
    if not labs:
        return ""
    try:
        patient_inputs_from_mapping(labs)
    except (InvalidInputs, InputError) as exc:
        return str(exc)
    return ""


def _id_of(message: Any) -> str | None:
    rid = message.get("result_id") if isinstance(message, dict) else None
    return rid if isinstance(rid, str) and _UUID.fullmatch(rid) else None


def _sniff_id(payload: bytes) -> str | None:
    """Best effort (lenient JSON): the result_id of an oversize or non-strict payload, so its sender can
    settle it instead of resending it."""
    try:
        return _id_of(json.loads(payload.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
