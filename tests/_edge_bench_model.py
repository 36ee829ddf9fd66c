"""The real exported model the edge-bench and model-latency tests run (the project's shared tiny model).

Paths of the fp32/int8 models and of the checkpoint they were exported from (for the PyTorch
baseline's weights), built once per test process by model_fixtures.tiny_model_result().
"""

from __future__ import annotations

from pathlib import Path


def tiny_model_files() -> dict[str, Path]:
    from model_fixtures import tiny_model_result
    from runtime.contracts.modelcard import load_card

    result = tiny_model_result()
    checkpoint_name = load_card(result.fp32).extra["checkpoint"]["file"]
    return {"fp32": result.fp32, "int8": result.int8, "checkpoint": result.fp32.parent / "train" / checkpoint_name}
