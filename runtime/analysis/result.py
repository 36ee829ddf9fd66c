"""Builds `result/1` messages (runtime/contracts/schemas/result-1.schema.json) and validates them before they leave.

A message that fails validation is a bug on the device, so it raises SchemaError instead of being
published: the server would reject it anyway, and the outbox must never hold one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

from runtime.analysis.analyzer import FrameAnalysis
from runtime.contracts.ids import uuid7
from runtime.contracts.sample import SampleField
from runtime.contracts.schema import validate

RESULT_SCHEMA_NAME = "result/1"


def utc_now() -> str:
    """RFC 3339 UTC timestamp with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_result(
    analysis: FrameAnalysis,
    *,
    device_id: str,
    seq: int,
    sample: SampleField,
    model: Mapping[str, Any],
    extra_timings_ms: Mapping[str, float] | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """One validated result/1 message; `extra_timings_ms` adds stages outside the analyser (capture)."""
    timings = dict(extra_timings_ms or {})
    timings.update(analysis.timings_ms)
    message: dict[str, Any] = {
        "schema": RESULT_SCHEMA_NAME,
        "result_id": uuid7(),
        "device_id": device_id,
        "seq": seq,
        "created_at": created_at or utc_now(),
        "sample": sample.to_dict(),
        "model": dict(model),
        "quality": analysis.quality_dict(),
        "counts": dict(analysis.counts),
        "area_pct": dict(analysis.area_pct),
        "derived": analysis.derived,
        "diagnosis": analysis.diagnosis,
        "timings_ms": timings,
    }
    validate(message)
    return message
