"""Model cards for exported ONNX files (runtime.contracts.modelcard.ModelCard, written beside the model)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from runtime.contracts.classes import CLASS_NAMES
from runtime.contracts.modelcard import ModelCard, card_path_for, sha256_file
from runtime.inference.preprocess import PreprocessParams


def onnx_io(path: str | Path) -> tuple[str, list[Any], list[str], int]:
    """(input name, input shape with symbolic dims as names, output names, opset) of an ONNX file."""
    model = onnx.load(str(path), load_external_data=False)
    inp = model.graph.input[0]
    shape = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return inp.name, shape, [o.name for o in model.graph.output], int(opset)


@dataclass(frozen=True)
class CardContent:
    """What a card says about a model besides what the ONNX file itself tells (hash, I/O, opset)."""

    name: str
    version: str
    task: str
    preprocess: PreprocessParams | None
    quantization: dict[str, Any] | None
    training_data: dict[str, Any]
    metrics: dict[str, Any]
    classes: list[str] | None = None
    extra: dict[str, Any] | None = None


def write_card(onnx_path: str | Path, content: CardContent) -> ModelCard:
    """Describe `onnx_path` (hash, I/O, opset read from the file itself) and write `<model>.json`."""
    input_name, input_shape, output_names, opset = onnx_io(onnx_path)
    card = ModelCard(
        name=content.name,
        version=content.version,
        sha256=sha256_file(onnx_path),
        task=content.task,
        classes=list(content.classes if content.classes is not None else CLASS_NAMES),
        input_name=input_name,
        input_shape=input_shape,
        output_names=output_names,
        opset=opset,
        preprocess=content.preprocess,
        quantization=content.quantization,
        training_data=content.training_data,
        metrics=content.metrics,
        extra=dict(content.extra or {}),
    )
    card.write(card_path_for(onnx_path))
    return card
