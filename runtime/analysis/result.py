"""Builds result messages (runtime/contracts/schemas/result-2.schema.json) and validates them before they leave.

A message that fails validation is a bug on the device, so it raises SchemaError instead of being
published: the server would reject it anyway, and the outbox must never hold one. An analysis
without cell records (a caller that only counted) still gets the older `result/1`, which the
server keeps accepting.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping

from runtime.analysis.analyzer import FrameAnalysis
from runtime.analysis.cells import DEFAULT_CELL_LIMIT, Cell
from runtime.analysis.review import review_analysis
from runtime.contracts.classes import CELL_CLASSES
from runtime.contracts.errors import SchemaError
from runtime.contracts.ids import uuid7
from runtime.contracts.sample import SampleField
from runtime.contracts.schema import RESULT_SCHEMAS, validate

RESULT_SCHEMA_NAME = "result/2"
CELL_COLUMNS = ("class", "number", "x", "y", "box_x", "box_y", "box_w", "box_h", "area_px", "confidence", "border")


def utc_now() -> str:
    """RFC 3339 UTC timestamp with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cell_row(cell: Cell) -> list[int | float]:
    """One cell as the short array of result/2's `cells.items` (columns CELL_COLUMNS)."""
    x, y, w, h = cell.bbox_px
    return [CELL_CLASSES[cell.cls], cell.number, round(cell.centre_px[0], 1), round(cell.centre_px[1], 1),
            x, y, w, h, cell.area_px, round(cell.confidence, 3), int(cell.on_border)]


def build_result(
    analysis: FrameAnalysis,
    *,
    device_id: str,
    seq: int,
    sample: SampleField,
    model: Mapping[str, Any],
    extra_timings_ms: Mapping[str, float] | None = None,
    created_at: str | None = None,
    cell_limit: int = DEFAULT_CELL_LIMIT,
) -> dict[str, Any]:
    """One validated result message (result/2 with the cells and the review verdict);
    `extra_timings_ms` adds stages outside the analyser (capture)."""
    timings = dict(extra_timings_ms or {})
    timings.update(analysis.timings_ms)
    message: dict[str, Any] = {
        "schema": "result/1" if analysis.cells is None else RESULT_SCHEMA_NAME,
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
    if analysis.cells is not None:
        if analysis.cells.counts != dict(analysis.counts):
            raise SchemaError(f"counts {dict(analysis.counts)} are not the cells' {analysis.cells.counts}")
        kept, capped = analysis.cells.limited(cell_limit)
        message["cells"] = {"columns": list(CELL_COLUMNS), "limit": cell_limit, "capped": capped,
                            "um_per_px": analysis.um_per_px, "items": [cell_row(c) for c in kept]}
        message["review"] = review_analysis(analysis, capped)
    check_finite(message)
    validate(message, RESULT_SCHEMAS[message["schema"]])
    return message


def check_finite(message: Mapping[str, Any]) -> None:
    """Raise SchemaError when a number is NaN or infinite (JSON has neither; the schema's bounds
    let NaN through, since every comparison with it is false)."""
    try:
        json.dumps(message, allow_nan=False)
    except ValueError:
        raise SchemaError(f"{message.get('schema')}: a number is NaN or infinite") from None
