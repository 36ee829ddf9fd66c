"""Re-quantize an exported model with the current pipeline, keeping its card's figures true.

For changes to the int8 step that must not change what the model outputs (export.layout's graph
rewrites): the new int8 file replaces the old one only if, calibrated on the same frames (same
calibration-set hash), it gives exactly the old file's outputs on every calibration frame. Then
every measured figure on the card still describes the file; the card gets the new hash and
quantization section through export.card. Anything else needs a full export from the checkpoint.

    python -m export.requantize models/segmentation.int8.onnx --calibration-data ../shared/data/txl_pbc
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from export.card import CardContent, write_card
from export.quantize import Frame, GraphChoices, PreprocessedFrames, calibrator_frames, quantize_int8
from runtime.contracts.errors import ConfigError, ModelError
from runtime.contracts.modelcard import ModelCard, load_card, sha256_file
from runtime.inference.session import SessionOptions, create_session


def fp32_beside(int8_path: Path) -> Path:
    """NAME.int8.onnx -> NAME.fp32.onnx (the pipeline writes both into one folder)."""
    if not int8_path.name.endswith(".int8.onnx"):
        raise ConfigError(f"{int8_path}: expected a NAME.int8.onnx written by `smearscope export`")
    return int8_path.with_name(int8_path.name[: -len(".int8.onnx")] + ".fp32.onnx")


def _outputs(path: Path, tensors: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    session = create_session(path, SessionOptions(providers=("cpu",), warmup=False, verify_hash=False))
    name = session.get_inputs()[0].name
    return [session.run(None, {name: t}) for t in tensors]


def requantize(int8_path: str | Path, calibration: Sequence[Frame],
               log: Callable[[str], None] = print) -> ModelCard:
    """Re-quantize `int8_path` from its fp32 sibling on `calibration` (see the module docstring)."""
    from export.validate import conv_census

    int8_path = Path(int8_path)
    card = load_card(int8_path)  # refuses a file that does not match its card
    fp32_path = fp32_beside(int8_path)
    expected_fp32 = (card.extra.get("fp32_to_int8") or {}).get("fp32_sha256")
    if not fp32_path.is_file() or sha256_file(fp32_path) != expected_fp32:
        raise ModelError(f"{fp32_path}: missing or not the fp32 model {int8_path.name} was quantized from")
    old = card.quantization or {}
    method = old.get("calibration_method", "minmax")
    reader = PreprocessedFrames(calibration, card.preprocess)
    if calibrator_frames(reader, method).sha256 != old.get("calibration_set_sha256"):
        raise ConfigError(f"calibration frames hash {reader.sha256[:12]}, the card's {str(old.get('calibration_set_sha256'))[:12]}: "
                          "pass the frames the model was calibrated on")
    with tempfile.TemporaryDirectory(prefix="smearscope-requant-", dir=int8_path.parent) as tmp:
        new_path = Path(tmp) / int8_path.name
        log(f"quantizing {fp32_path.name} on {len(reader)} frames ({method})")
        # Concat inputs quantized as their output, and nodes left in float, change the outputs: each only
        # for a model quantized so.
        quantization = quantize_int8(fp32_path, new_path, reader, method, GraphChoices(
            concat_copies=old.get("concat_copies") is not None,
            float_nodes=bool(old.get("left_in_float")),
            float_heads="head_results" in (old.get("left_in_float") or {}),
            conv_path=(old.get("conv_path") or {}).get("path", "direct")))
        before, after = _outputs(int8_path, reader.tensors), _outputs(new_path, reader.tensors)
        worst = max(float(np.abs(a - b).max()) for x, y in zip(before, after) for a, b in zip(x, y))
        if worst != 0.0:
            raise ModelError(f"re-quantized outputs differ from {int8_path.name}'s by up to {worst:.3g}: "
                             "its card's figures would not describe it; export again from the checkpoint")
        census = conv_census(new_path)
        if census.floating or census.quantized != card.extra.get("fp32_to_int8", {}).get("quantized_convs"):
            raise ModelError(f"re-quantized graph runs {census.quantized} quantized and {len(census.floating)} float convolutions")
        quantization["calibration_data"] = old.get("calibration_data")
        quantization["requantized_from"] = {"sha256": card.sha256, "identical_outputs_on_frames": len(reader),
                                            "onnxruntime": old.get("onnxruntime")}
        os.replace(new_path, int8_path)
    log(f"outputs identical on {len(reader)} frames; wrote {int8_path}")
    return write_card(int8_path, CardContent(
        name=card.name, version=card.version, task=card.task, preprocess=card.preprocess, quantization=quantization,
        training_data=card.training_data, metrics=card.metrics, classes=card.classes, extra=card.extra))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("int8", type=Path, help="NAME.int8.onnx with its card and NAME.fp32.onnx beside it")
    parser.add_argument("--calibration-data", required=True, type=Path,
                        help="the TXL-PBC folder the model was calibrated on (its train split is read)")
    args = parser.parse_args(argv)
    from export.quantize import frames_from_source
    from training.datasets import build_source

    card = load_card(args.int8)
    count = int((card.quantization or {}).get("calibration_frames", 0))
    if not count:
        raise ConfigError(f"{args.int8}: its card records no calibration frame count")
    frames = frames_from_source(build_source("txl_pbc", args.calibration_data, "train"), count)
    requantize(args.int8, frames)


if __name__ == "__main__":
    main()
