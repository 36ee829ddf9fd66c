"""The real segmentation model the device tests run: the shared tiny U-Net (trained on synthetic
smears, exported, quantized to int8, validated, with its card), built once per test process by
model_fixtures.tiny_model_result(). The device tests use the int8 file, as a device would."""

from __future__ import annotations

from pathlib import Path

UM_PER_PX = 0.25
"""Scale of the synthetic frames the device tests make (runtime.capture.synthetic's µm per pixel)."""


def trained_model_path() -> Path:
    """The int8 ONNX file; its card (sha256, preprocessing) lies beside it."""
    from model_fixtures import tiny_model_result

    return Path(tiny_model_result().int8)
