"""Shared contracts: UUIDv7 ids, schema validation listing every problem, provider resolution."""

from __future__ import annotations

import pytest

from runtime.contracts.errors import ModelError, SchemaError
from runtime.contracts.ids import uuid7
from runtime.inference.session import resolve_providers
from runtime.contracts.schema import schema_errors, validate


def test_uuid7_is_version_7_and_ordered():
    ids = [uuid7() for _ in range(2000)]
    assert all(i[14] == "7" and i[19] in "89ab" for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def _minimal_result():
    return {
        "schema": "result/1", "result_id": uuid7(), "device_id": "scope-01", "seq": 0,
        "created_at": "2026-11-25T12:00:00Z", "sample": {"sample_id": "S1"},
        "model": {"name": "seg", "version": "1", "sha256": "0" * 64},
        "quality": {"accepted": True}, "counts": {"rbc": 1, "wbc": 0, "platelet": 0},
        "area_pct": {"background": 90.0, "rbc": 10.0, "wbc": 0.0, "platelet": 0.0},
        "timings_ms": {"inference": 5.0},
    }


def test_result_schema_accepts_minimal_and_lists_every_error():
    validate(_minimal_result())
    bad = _minimal_result()
    bad["schema"] = "result/9"  # unknown: checked against result/1, which names the version
    bad["counts"]["rbc"] = -1
    del bad["device_id"]
    errors = schema_errors(bad)
    assert len(errors) == 3
    with pytest.raises(SchemaError, match="counts/rbc"):
        validate(bad)


def test_cpu_provider_always_present_and_unknown_rejected():
    assert resolve_providers(["tensorrt", "cuda", "cpu"])[-1] == "CPUExecutionProvider"
    with pytest.raises(ModelError, match="unknown execution provider"):
        resolve_providers(["warp-drive"])
