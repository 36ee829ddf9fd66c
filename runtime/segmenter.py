"""The segmentation model on the device: a verified ONNX session and the preprocessing of its card.

Preprocessing parameters come from the model card, never from device config, so the device
feeds the network exactly the tensor it was trained and calibrated on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.classes import NUM_CLASSES
from runtime.config import ModelConfig
from runtime.errors import ConfigError, ModelError
from runtime.modelcard import ModelCard, default_models_dir
from runtime.onnx_session import LoadedModel, SessionOptions, load_model
from runtime.postprocess import InferencePlan, NetworkPass, run_pass
from runtime.preprocess import PreprocessParams, Prepared, ScaleDecision, decide_scale, preprocess

DEFAULT_MODEL_NAME = "segmentation.int8.onnx"


def default_model_path() -> Path:
    """The shipped int8 segmentation model."""
    return default_models_dir() / DEFAULT_MODEL_NAME


def session_options(config: ModelConfig) -> SessionOptions:
    """ONNX Runtime options from the device config's model section."""
    return SessionOptions(providers=config.providers, intra_op_threads=config.threads, warmup=config.warmup)


@dataclass
class SegmentationModel:
    """A verified segmentation model and the preprocessing recorded in its card."""

    loaded: LoadedModel
    params: PreprocessParams
    plan: InferencePlan = InferencePlan()
    """How frames are searched for their scale (and flip-averaged), from the card's `inference`."""

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
            plan = dataclasses.replace(plan, flip_average=flip_average)
        return cls(loaded=loaded, params=card.preprocess, plan=plan)

    @property
    def card(self) -> ModelCard:
        return self.loaded.card

    @property
    def path(self) -> Path:
        return self.loaded.path

    def info(self) -> dict[str, str]:
        """The `model` object of a result/1 message."""
        return {"name": self.card.name, "version": self.card.version, "sha256": self.card.sha256}

    def decide_scale(self, frame_bgr: np.ndarray, um_per_px: float | None = None) -> ScaleDecision:
        """How much this frame is resampled so red cells match the training scale."""
        return decide_scale(self.params, frame_bgr, um_per_px=um_per_px)

    def prepare(self, frame_bgr: np.ndarray, scale: ScaleDecision, source: str = "frame") -> Prepared:
        """The one preprocessing, with the card's parameters."""
        return preprocess(frame_bgr, self.params, scale=scale, source=source)

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """The network's outputs by name ('logits', and 'centres' with a centre head) for a 1xCxHxW tensor."""
        outputs = self.loaded.run({self.card.input_name: tensor})
        logits = outputs["logits"] if "logits" in outputs else next(iter(outputs.values()))
        if logits.ndim != 4 or logits.shape[1] != NUM_CLASSES:
            raise ModelError(
                f"{self.path}: output has shape {logits.shape}, expected 1x{NUM_CLASSES}xHxW class scores"
            )
        return outputs

    def predict(self, prepared: Prepared) -> NetworkPass:
        """One network pass on a prepared tensor (runtime.postprocess.run_pass)."""
        return run_pass(self.run, prepared)
