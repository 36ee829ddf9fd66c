"""A real exported segmentation model for tests: tiny U-Net trained for 200 steps (about a minute) on synthetic smears,
exported to ONNX, quantized to int8, validated, with model cards (export.quick.build_tiny_model).

Built once per test process. Use it from any test module:

    from model_fixtures import tiny_model        # noqa: F401  (a session-wide pytest fixture)

    def test_something(tiny_model):
        tiny_model.int8, tiny_model.fp32          # paths; cards beside them (runtime.contracts.modelcard.load_card)

or call `tiny_model_result()` directly. Set SMEARSCOPE_TINY_MODEL_DIR to keep the model between
runs (it is rebuilt whenever the training/export/preprocessing code changes).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

import pytest

TRAIN_STEPS = 200
_CODE = ("training", "export", "runtime/inference/preprocess.py", "runtime/capture/synthetic.py")


def _code_hash(root: Path) -> str:
    digest = hashlib.sha256(str(TRAIN_STEPS).encode())
    for part in _CODE:
        path = root / part
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def tiny_model_result():
    """ExportResult of the tiny model (fp32/int8 paths, cards, validation report)."""
    from export.quick import TinyRecipe, build_tiny_model

    root = Path(__file__).resolve().parent.parent
    keep = os.environ.get("SMEARSCOPE_TINY_MODEL_DIR")
    out = Path(keep) / _code_hash(root) if keep else Path(tempfile.mkdtemp(prefix="smearscope-tiny-model-"))
    if keep and (out / "result.pt").is_file():
        import torch

        return torch.load(out / "result.pt", weights_only=False)
    result = build_tiny_model(out, TinyRecipe(steps=TRAIN_STEPS))
    if keep:
        import torch

        torch.save(result, out / "result.pt")
    return result


@pytest.fixture(scope="session")
def tiny_model():
    return tiny_model_result()
