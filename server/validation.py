"""Checks every incoming message before it may touch the store.

Order: size (before decoding anything), topic, strict UTF-8, strict JSON (no NaN/Infinity, no
duplicate keys), schema version, the full schema of that version (result/1 or result/2), then device identity. The broker's ACL
(`pattern write smearscope/v1/+/%u/results`, with the certificate's CN as user name) guarantees that
the topic's device is the authenticated user; this module checks the payload's device_id against
the topic, which closes the chain: topic device = payload device = authenticated user.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from runtime.delivery.topics import Topic, TopicError, parse
from runtime.contracts.schema import RESULT_SCHEMAS, schema_errors

SCHEMA_VERSION = "result/2"
"""The version devices build now; every version in RESULT_SCHEMAS is accepted."""
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


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


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


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
        message = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        return Rejected("not_json", str(exc)[:200], parsed_topic, None)
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
    canonical = canonical_json(message)
    return Accepted(parsed_topic, message, canonical, hashlib.sha256(canonical.encode("utf-8")).hexdigest())


def _id_of(message: Any) -> str | None:
    rid = message.get("result_id") if isinstance(message, dict) else None
    return rid if isinstance(rid, str) and _UUID.match(rid) else None


def _sniff_id(payload: bytes) -> str | None:
    """Best effort: the result_id of an oversize payload, so its sender can stop resending it."""
    try:
        return _id_of(json.loads(payload.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
