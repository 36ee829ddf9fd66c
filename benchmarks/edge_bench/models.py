"""Which segmentation models a benchmark runs, and loading them the way the device does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.edge_bench.timing import time_call
from runtime.contracts.errors import ModelError

VARIANT_FILES = {"fp32": "segmentation.fp32.onnx", "int8": "segmentation.int8.onnx"}


@dataclass(frozen=True)
class ModelFile:
    """One model variant on disk and what its card says about it."""

    variant: str
    path: Path
    name: str
    version: str
    sha256: str
    size_bytes: int
    input_name: str
    card: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "path": str(self.path),
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
        }


def describe(variant: str, path: Path) -> ModelFile:
    """Read the card beside `path` (sha256 verified: a benchmark of a tampered file means nothing)."""
    from runtime.contracts.modelcard import load_card

    card = load_card(path, verify=True)
    return ModelFile(
        variant=variant,
        path=path,
        name=card.name,
        version=card.version,
        sha256=card.sha256,
        size_bytes=path.stat().st_size,
        input_name=card.input_name,
        card=card,
    )


def find_models(model_dir: Path | None, fp32: Path | None, int8: Path | None) -> list[ModelFile]:
    """fp32 and int8 models from explicit paths, else the shipped names in `model_dir`."""
    from runtime.contracts.modelcard import default_models_dir

    folder = model_dir or default_models_dir()
    chosen = {"fp32": fp32, "int8": int8}
    found = []
    for variant, filename in VARIANT_FILES.items():
        path = chosen[variant] or folder / filename
        if chosen[variant] is not None and not path.is_file():
            raise ModelError(f"{path}: model file does not exist")
        if path.is_file():
            found.append(describe(variant, path))
    if not found:
        raise ModelError(
            f"no segmentation model found: expected {' or '.join(VARIANT_FILES.values())} in {folder} "
            "(give --model-dir, --fp32 or --int8)"
        )
    return found


def open_session(model: ModelFile, provider: str, threads: int) -> tuple[float, Any]:
    """Load a model as the device does (card hash check, session creation), without warm-up.

    Returns (milliseconds it took, LoadedModel).
    """
    from runtime.inference.session import SessionOptions, load_model

    options = SessionOptions(providers=(provider,), intra_op_threads=threads, warmup=False, verify_hash=True)
    return time_call(lambda: load_model(model.path, options))


def compute_providers() -> list[str]:
    """Execution providers this ONNX Runtime build has that run models locally (Azure excluded)."""
    import onnxruntime as ort

    return [p for p in ort.get_available_providers() if p != "AzureExecutionProvider"]
