"""torch -> ONNX (named inputs/outputs, dynamic axes, opset >= 17) and onnxsim simplification."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import onnx
import torch

from runtime.contracts.errors import ModelError
from runtime.inference.preprocess import PreprocessParams

DEFAULT_OPSET = 17


def export_onnx(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
) -> Path:
    """Export any eval-mode module to ONNX, check it, and (by default) simplify it with onnxsim."""
    if opset < DEFAULT_OPSET:
        raise ModelError(f"opset {opset} is too old; use {DEFAULT_OPSET} or newer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter announces its own deprecation on every call; the export is checked below.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            tuple(example_inputs),
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={k: dict(v) for k, v in (dynamic_axes or {}).items()},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter: no onnxscript dependency, stable op choice
        )
    onnx.checker.check_model(str(path))
    if simplify:
        simplify_onnx(path)
    return path


def simplify_onnx(path: str | Path) -> Path:
    """Fold constants and remove redundant nodes in place (onnxsim); raises if the result differs."""
    import onnxsim

    path = Path(path)
    model = onnx.load(str(path))
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise ModelError(f"{path}: onnxsim could not verify the simplified model")
    onnx.save(simplified, str(path))
    return path


def export_segmentation(model: torch.nn.Module, params: PreprocessParams, path: str | Path,
                        *, opset: int = DEFAULT_OPSET) -> Path:
    """Export a segmentation network: input "image" (N x 3 x H x W), outputs "logits" [+ "centres"]."""
    stride = max(params.stride, getattr(model, "stride", 1))
    example = torch.zeros(1, 3, 4 * stride, 4 * stride)
    output_names = list(getattr(model, "output_names", ["logits"]))
    spatial = {0: "batch", 2: "height", 3: "width"}
    axes = {"image": spatial, **{name: spatial for name in output_names}}
    return export_onnx(model, (example,), path, ["image"], output_names, axes, opset=opset)
