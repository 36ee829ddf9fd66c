"""A real exported model for the edge-bench and model-latency tests, built once per test process.

Uses the export pipeline's own tiny-model helper (train a few seconds on synthetic smears, export,
quantize, validate, write cards), so the benchmarks run exactly what a shipped model is.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=1)
def tiny_model_files() -> dict[str, Path]:
    """{'fp32': ..., 'int8': ..., 'checkpoint': ...} in a temporary folder kept for the process."""
    from export.quick import build_tiny_model

    out = Path(tempfile.mkdtemp(prefix="edge-bench-tiny-"))
    result = build_tiny_model(out, seconds=5)
    return {"fp32": result.fp32, "int8": result.int8, "checkpoint": out / "train" / "best.pt"}
