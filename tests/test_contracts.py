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


def test_validation_without_the_compiled_checker_gives_the_same_verdicts(monkeypatch):
    """A board with no jsonschema-rs wheel validates through jsonschema alone, with the same
    verdicts and messages. numpy numbers get the same verdict both ways: a float64 is a JSON
    number; an int64 is not JSON at all (json.dumps refuses it), so jsonschema decides, and rejects."""
    import numpy as np

    from runtime.contracts import schema

    good, bad = _minimal_result(), _minimal_result()
    bad["counts"]["rbc"] = -1
    numpy_float, numpy_int = _minimal_result(), _minimal_result()
    numpy_float["quality"]["focus"] = np.float64(12.5)
    numpy_int["counts"]["rbc"] = np.int64(12)
    cases = [good, bad, numpy_float, numpy_int]
    with_compiled = [schema_errors(m) for m in cases]
    monkeypatch.setattr(schema, "jsonschema_rs", None)
    schema._compiled.cache_clear()
    try:
        assert schema.compiled_accepts(good, "result-1") is None
        assert [schema_errors(m) for m in cases] == with_compiled
    finally:
        schema._compiled.cache_clear()
    assert with_compiled[0] == [] == with_compiled[2]
    assert any("counts/rbc" in e for e in with_compiled[1]) and any("counts/rbc" in e for e in with_compiled[3])


def test_cpu_provider_always_present_and_unknown_rejected():
    assert resolve_providers(["tensorrt", "cuda", "cpu"])[-1] == "CPUExecutionProvider"
    with pytest.raises(ModelError, match="unknown execution provider"):
        resolve_providers(["warp-drive"])
