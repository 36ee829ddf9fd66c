"""A segmentation network as the analysis sees it: preprocessing, plan, and one decoded pass.

`Network` is what the scale search and the counting stage take: the shipped ONNX model
(runtime.inference.model.SegmentationModel) and test doubles (`FunctionNetwork`) alike, so a
frame's path from analysis to ONNX Runtime is: scale search -> `Network.predict` -> `run`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from runtime.contracts.card_sections import InferencePlan, PreprocessParams
from runtime.inference.cell_size import rbc_diameter_from_mask
from runtime.inference.preprocess import Prepared, ScaleDecision, decide_scale, preprocess

Run = Callable[[np.ndarray], Mapping[str, np.ndarray]]
"""Runs the network on a 1xCxHxW tensor and returns its outputs by name ('logits', optional 'centres')."""

DEFAULT_PLAN = InferencePlan()


@dataclass(frozen=True)
class NetworkPass:
    """One network run at one scale, on the network grid."""

    prepared: Prepared
    logits: np.ndarray
    """CxHxW class scores (padded grid)."""
    heat: np.ndarray | None
    """1xHxW red-cell centre heat-map in [0, 1], when the model has a centre head."""
    measured: float | None
    """Red-cell diameter in frame pixels measured on this pass's mask."""
    confidence: float
    """Mean top-class probability inside the frame: higher when cells appear near the learnt size."""
    runs: int = 1
    """Network runs behind these outputs (3 when flip-averaged)."""

    @property
    def decision(self) -> ScaleDecision:
        return self.prepared.scale


def decode_outputs(outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """(CxHxW class scores, 1xHxW centre heat-map in [0, 1] or None) of one network run."""
    logits = np.asarray(outputs["logits"] if "logits" in outputs else next(iter(outputs.values())))[0]
    centres = outputs.get("centres")
    heat = None
    if centres is not None:
        heat = 1.0 / (1.0 + np.exp(-np.asarray(centres, np.float32)[0].reshape(1, *logits.shape[1:])))
    return logits, heat


def read_pass(prepared: Prepared, logits: np.ndarray, heat: np.ndarray | None, runs: int) -> NetworkPass:
    """What the scale search needs of decoded outputs: the red-cell size and the confidence."""
    rh, rw = prepared.geometry.resized_hw
    inside = logits[:, :rh, :rw].astype(np.float32)
    grid_mask = inside.argmax(axis=0).astype(np.uint8)
    diameter = rbc_diameter_from_mask(grid_mask)
    measured = None if diameter is None else diameter / prepared.geometry.scale
    shifted = np.exp(inside - inside.max(axis=0, keepdims=True))
    confidence = float((1.0 / shifted.sum(axis=0)).mean())
    return NetworkPass(prepared, logits, heat, measured, confidence, runs)


class Network:
    """A segmentation network with the preprocessing and inference plan of its card.

    Subclasses give `run` (tensor -> outputs by name); everything else is shared."""

    params: PreprocessParams
    plan: InferencePlan

    def run(self, tensor: np.ndarray) -> Mapping[str, np.ndarray]:
        raise NotImplementedError

    def decide_scale(self, frame_bgr: np.ndarray, um_per_px: float | None = None) -> ScaleDecision:
        """How much this frame is resampled so red cells match the training scale (first guess)."""
        return decide_scale(self.params, frame_bgr, um_per_px=um_per_px)

    def prepare(self, frame_bgr: np.ndarray, scale: ScaleDecision, source: str = "frame") -> Prepared:
        """The one preprocessing, with the card's parameters."""
        return preprocess(frame_bgr, self.params, scale=scale, source=source)

    def predict(self, prepared: Prepared) -> NetworkPass:
        """One network run on a prepared tensor, decoded."""
        logits, heat = decode_outputs(self.run(prepared.tensor))
        return read_pass(prepared, logits, heat, runs=1)

    def flip_averaged(self, plain: NetworkPass) -> NetworkPass:
        """`plain` averaged with the network's left-right and up-down flipped runs (each flipped back):
        the mean of three views smooths the class boundaries and centre peaks the network draws."""
        logits = plain.logits.astype(np.float32).copy()
        heat = None if plain.heat is None else plain.heat.astype(np.float32).copy()
        for axis in (-1, -2):
            flipped = np.ascontiguousarray(np.flip(plain.prepared.tensor, axis=axis))
            flipped_logits, flipped_heat = decode_outputs(self.run(flipped))
            logits += np.flip(flipped_logits, axis=axis)
            if heat is not None and flipped_heat is not None:
                heat += np.flip(flipped_heat, axis=axis)
        return read_pass(plain.prepared, logits / 3.0, None if heat is None else heat / 3.0, runs=plain.runs + 2)


@dataclass
class FunctionNetwork(Network):
    """A network given as a plain function (export's torch and ONNX candidates, test doubles)."""

    function: Run
    params: PreprocessParams
    plan: InferencePlan = DEFAULT_PLAN

    def run(self, tensor: np.ndarray) -> Mapping[str, np.ndarray]:
        return self.function(tensor)
