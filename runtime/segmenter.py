"""The segmentation model on the device: frame -> class mask at the frame's own size.

Preprocessing parameters come from the model card, never from device config, so the device
feeds the network exactly the tensor it was trained and calibrated on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.classes import NUM_CLASSES
from runtime.config import ModelConfig
from runtime.errors import ModelError
from runtime.modelcard import ModelCard, default_models_dir
from runtime.onnx_session import LoadedModel, SessionOptions, load_model
from runtime.preprocess import Geometry, PreprocessParams, Prepared, ScaleDecision, decide_scale, preprocess, scores_to_frame

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

    @classmethod
    def load(cls, path: str | Path | None = None, options: SessionOptions | None = None) -> "SegmentationModel":
        """Load and verify (sha256 against the card), then warm up. Raises ModelError/ModelIntegrityError."""
        path = Path(path) if path is not None else default_model_path()
        loaded = load_model(path, options)
        card = loaded.card
        if card.preprocess is None:
            raise ModelError(f"{path}: model card has no preprocess parameters; re-export the model")
        if len(card.classes) != NUM_CLASSES:
            raise ModelError(f"{path}: card lists {len(card.classes)} classes, the device expects {NUM_CLASSES}")
        return cls(loaded=loaded, params=card.preprocess)

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

    def infer(self, prepared: Prepared) -> np.ndarray:
        """Run the network; returns its first output for the single batch item (CxHxW or HxW)."""
        outputs = self.loaded.run({self.card.input_name: prepared.tensor})
        out = outputs.get(self.card.output_names[0]) if self.card.output_names else None
        if out is None:
            out = next(iter(outputs.values()))
        return np.asarray(out)[0]

    def to_mask(self, scores: np.ndarray, geometry: Geometry) -> np.ndarray:
        """Network output -> uint8 class mask at the frame's size (scores resampled, then argmax)."""
        if scores.ndim != 3 or scores.shape[0] != NUM_CLASSES:
            raise ModelError(
                f"{self.path}: output has shape {scores.shape}, expected {NUM_CLASSES} class score maps"
            )
        frame_scores = scores_to_frame(scores.astype(np.float32, copy=False), geometry)
        return frame_scores.argmax(axis=0).astype(np.uint8)
