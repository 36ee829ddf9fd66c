"""Model cards: the JSON file beside each shipped ONNX model.

The card records what the runtime needs to use a model correctly (classes, input shape, the
preprocessing parameters) and what a person needs to trust it (sha256, training data, validation
metrics, quantization details). The runtime refuses a model whose sha256 differs from its card.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.contracts.errors import ConfigError, ModelError, ModelIntegrityError
from runtime.contracts.card_sections import PreprocessParams

CARD_SCHEMA = "smearscope-model-card/1"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_path_for(model_path: str | Path) -> Path:
    """`models/x.int8.onnx` -> `models/x.int8.json`."""
    return Path(model_path).with_suffix(".json")


@dataclass
class ModelCard:
    """Typed view of a model card; unknown extra sections are kept in `extra`."""

    name: str
    version: str
    sha256: str
    task: str
    classes: list[str]
    input_name: str
    input_shape: list[Any]
    output_names: list[str]
    opset: int
    preprocess: PreprocessParams | None = None
    quantization: dict[str, Any] | None = None
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": CARD_SCHEMA,
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "task": self.task,
            "classes": list(self.classes),
            "input_name": self.input_name,
            "input_shape": list(self.input_shape),
            "output_names": list(self.output_names),
            "opset": self.opset,
            "preprocess": self.preprocess.to_dict() if self.preprocess else None,
            "quantization": self.quantization,
            "training_data": self.training_data,
            "metrics": self.metrics,
        }
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "card") -> "ModelCard":
        if not isinstance(data, dict):
            raise ModelError(f"{source}: a model card is a JSON object, got {type(data).__name__}")
        try:
            return cls._from_dict(data, source)
        except (TypeError, ValueError, ConfigError) as exc:  # a field of the wrong type or range
            raise ModelError(f"{source}: {exc}") from None

    @classmethod
    def _from_dict(cls, data: dict[str, Any], source: str) -> "ModelCard":
        required = ("name", "version", "sha256", "task", "classes", "input_name", "input_shape", "output_names", "opset")
        missing = [k for k in required if k not in data]
        if missing:
            raise ModelError(f"{source}: model card lacks {', '.join(missing)}")
        sha = data["sha256"]
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ModelError(f"{source}: sha256 must be 64 lowercase hex digits, got {sha!r:.80}")
        known = set(required) | {"schema", "preprocess", "quantization", "training_data", "metrics"}
        pre = data.get("preprocess")
        return cls(
            name=data["name"],
            version=str(data["version"]),
            sha256=data["sha256"],
            task=data["task"],
            classes=list(data["classes"]),
            input_name=data["input_name"],
            input_shape=list(data["input_shape"]),
            output_names=list(data["output_names"]),
            opset=int(data["opset"]),
            preprocess=PreprocessParams.from_dict(pre) if pre else None,
            quantization=data.get("quantization"),
            training_data=data.get("training_data") or {},
            metrics=data.get("metrics") or {},
            extra={k: v for k, v in data.items() if k not in known},
        )

    def write(self, path: str | Path) -> None:
        """Write atomically so a crash never leaves half a card beside a model."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)


def load_card(model_path: str | Path, *, verify: bool = True) -> ModelCard:
    """Load the card beside `model_path`; with `verify`, refuse a model whose hash differs."""
    model_path = Path(model_path)
    if model_path.is_dir():
        raise ModelError(f"{model_path}: is a directory, expected an .onnx model file")
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file does not exist")
    card_file = card_path_for(model_path)
    if not card_file.is_file():
        raise ModelError(f"{model_path}: no model card beside it (expected {card_file.name})")
    try:
        data = json.loads(card_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{card_file}: unreadable model card ({exc})") from exc
    card = ModelCard.from_dict(data, source=str(card_file))
    if verify:
        actual = sha256_file(model_path)
        if actual != card.sha256:
            raise ModelIntegrityError(
                f"{model_path}: sha256 {actual[:16]}… does not match its card ({card.sha256[:16]}…); "
                "the model file was changed or corrupted — refusing to load it"
            )
    return card


def default_models_dir() -> Path:
    """Where shipped models live.

    $SMEARSCOPE_MODELS wins; then the repository's `models/` folder (a checkout or an editable
    install); then `<prefix>/share/smearscope/models`, where `pip install .` puts them on a device.
    """
    env = os.environ.get("SMEARSCOPE_MODELS")
    if env:
        return Path(env)
    in_repo = Path(__file__).resolve().parents[2] / "models"
    installed = Path(sys.prefix) / "share" / "smearscope" / "models"
    if not in_repo.is_dir() and installed.is_dir():
        return installed
    return in_repo
