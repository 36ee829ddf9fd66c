"""The segmentation model on the device: a verified ONNX session and the preprocessing of its card.

Preprocessing parameters come from the model card, never from device config, so the device
feeds the network exactly the tensor it was trained and calibrated on. The model runs its own
session and decodes its own outputs (runtime.inference.passes.Network).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.contracts.card_sections import InferencePlan, PreprocessParams
from runtime.contracts.classes import NUM_CLASSES
from runtime.contracts.config import ModelConfig
from runtime.contracts.errors import ConfigError, ModelError
from runtime.contracts.modelcard import ModelCard, default_models_dir
from runtime.inference.passes import Network
from runtime.inference.session import LoadedModel, SessionOptions, load_model

DEFAULT_MODEL_NAME = "segmentation.int8.onnx"


def default_model_path() -> Path:
    """The shipped int8 segmentation model."""
    return default_models_dir() / DEFAULT_MODEL_NAME


def session_options(config: ModelConfig) -> SessionOptions:
    """ONNX Runtime options from the device config's model section."""
    return SessionOptions(providers=config.providers, intra_op_threads=config.threads, warmup=config.warmup)


class SegmentationModel(Network):
    """A verified segmentation model and the preprocessing and inference plan recorded in its card."""

    def __init__(self, loaded: LoadedModel, params: PreprocessParams, plan: InferencePlan = InferencePlan()) -> None:
        self.loaded = loaded
        self.params = params
        self.plan = plan
        self._input = loaded.card.input_name
        self._outputs = [o.name for o in loaded.session.get_outputs()]

    @classmethod
    def load(cls, path: str | Path | None = None, options: SessionOptions | None = None, *,
             flip_average: bool | None = None) -> "SegmentationModel":
        """Load and verify (sha256 against the card), then warm up. Raises ModelError/ModelIntegrityError.

        `flip_average` overrides the card's inference plan (None keeps it)."""
        path = Path(path) if path is not None else default_model_path()
        loaded = load_model(path, options)
        card = loaded.card
        if card.preprocess is None:
            raise ModelError(f"{path}: model card has no preprocess parameters; re-export the model")
        if len(card.classes) != NUM_CLASSES:
            raise ModelError(f"{path}: card lists {len(card.classes)} classes, the device expects {NUM_CLASSES}")
        try:
            plan = InferencePlan.from_dict(card.extra.get("inference"))
        except (ConfigError, TypeError) as exc:
            raise ModelError(f"{path}: model card: {exc}") from exc
        if flip_average is not None:
            plan = plan.replace(flip_average=flip_average)
        return cls(loaded=loaded, params=card.preprocess, plan=plan)

    @property
    def card(self) -> ModelCard:
        return self.loaded.card

    @property
    def path(self) -> Path:
        return self.loaded.path

    def info(self) -> dict[str, str]:
        """The `model` object of a result message."""
        return {"name": self.card.name, "version": self.card.version, "sha256": self.card.sha256}

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """The network's outputs by name ('logits', and 'centres' with a centre head) for a 1xCxHxW tensor."""
        outputs = dict(zip(self._outputs, self.loaded.session.run(self._outputs, {self._input: tensor})))
        logits = outputs["logits"] if "logits" in outputs else next(iter(outputs.values()))
        if logits.ndim != 4 or logits.shape[1] != NUM_CLASSES:
            raise ModelError(
                f"{self.path}: output has shape {logits.shape}, expected 1x{NUM_CLASSES}xHxW class scores"
            )
        for name, value in outputs.items():  # NaN scores would argmax to "background": an empty, "ok" field
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                bad = int(value.size - np.count_nonzero(np.isfinite(value)))
                raise ModelError(f"{self.path}: output {name!r} has {bad} NaN or infinite value(s) of {value.size}; "
                                 "the model is broken, no result is made from it")
        return outputs
