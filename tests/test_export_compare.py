"""Output comparison for export validation: names, then shapes, then values; every mismatch listed."""

from __future__ import annotations

import numpy as np
import pytest

from export.compare import OutputMismatchError, check_outputs, compare_outputs

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(1, 4, 8, 8)).astype(np.float32)
AUX = RNG.normal(size=(1, 2)).astype(np.float32)


def test_identical_outputs_pass_with_their_differences():
    assert check_outputs({"logits": LOGITS, "aux": AUX}, {"aux": AUX, "logits": LOGITS.copy()}, "x", 1e-6) == \
        {"logits": 0.0, "aux": 0.0}


def test_outputs_are_matched_by_name_not_position():
    result = compare_outputs({"logits": LOGITS, "aux": AUX}, {"aux": AUX, "logits": LOGITS + 0.5}, "fp32", 1e-3)
    assert result.max_abs_diff == {"logits": pytest.approx(0.5), "aux": 0.0}
    assert result.problems == ["fp32: max |Δ logits| = 0.5 > 0.001"]


def test_missing_and_extra_names():
    result = compare_outputs({"logits": LOGITS, "aux": AUX}, {"logits": LOGITS, "scores": AUX}, "int8")
    assert result.problems == ["int8: missing output(s) aux", "int8: unexpected output(s) scores"]


def test_a_shape_that_would_broadcast_is_a_mismatch():
    flat = LOGITS.mean(axis=(2, 3), keepdims=True)  # (1, 4, 1, 1): numpy would broadcast it silently
    assert float(np.max(np.abs(flat - LOGITS))) < 5  # what a positional, shape-blind check computed
    result = compare_outputs({"logits": LOGITS}, {"logits": flat}, "fp32", 10.0)
    assert result.problems == ["fp32: output logits has shape [1, 4, 1, 1], expected [1, 4, 8, 8]"]
    assert result.max_abs_diff == {}


def test_non_finite_values_are_a_mismatch():
    bad = LOGITS.copy()
    bad[0, 0, 0, 0] = np.nan
    assert compare_outputs({"logits": LOGITS}, {"logits": bad}, "int8", 1.0).problems == \
        ["int8: output logits has NaN or infinite values"]


def test_every_mismatch_in_one_error():
    expected = {"logits": LOGITS, "aux": AUX, "probs": AUX, "extra_dims": LOGITS}
    actual = {"logits": LOGITS + 1.0, "probs": AUX, "extra_dims": LOGITS[:, :, :1, :1], "surprise": AUX}
    with pytest.raises(OutputMismatchError) as info:
        check_outputs(expected, actual, "fp32 ONNX vs PyTorch", 1e-3)
    assert info.value.problems == [
        "fp32 ONNX vs PyTorch: missing output(s) aux",
        "fp32 ONNX vs PyTorch: unexpected output(s) surprise",
        "fp32 ONNX vs PyTorch: output extra_dims has shape [1, 4, 1, 1], expected [1, 4, 8, 8]",
        "fp32 ONNX vs PyTorch: max |Δ logits| = 1 > 0.001",
    ]
    assert all(p in str(info.value) for p in info.value.problems)
