"""A segmentation network as the analysis sees it: preprocessing, plan, and one decoded pass.

`Network` is what the scale search and the counting stage take: the shipped ONNX model
(runtime.inference.model.SegmentationModel) and test doubles (`FunctionNetwork`) alike, so a
frame's path from analysis to ONNX Runtime is: scale search -> `Network.predict` -> `run`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from runtime.contracts.card_sections import InferencePlan, PreprocessParams
from runtime.inference.cell_size import rbc_diameter_from_mask
from runtime.inference.preprocess import Prepared, ScaleDecision, decide_scale, preprocess

Run = Callable[[np.ndarray], Mapping[str, np.ndarray]]
"""Runs the network on a 1xCxHxW tensor and returns its outputs by name ('logits', optional 'centres')."""

DEFAULT_PLAN = InferencePlan()


@dataclass(frozen=True)
class GridClasses:
    """One pass's class decision inside the resized region of the network grid (the frame's
    pixels, without the padding): what the scale search and the segmentation both read."""

    scores: np.ndarray
    """CxHxW class scores of the resized region (a view of the pass's logits)."""
    mask: np.ndarray
    """HxW uint8 argmax (the first class on ties)."""
    top_prob: np.ndarray
    """HxW float32 softmax probability of the mask's class."""


def grid_classes(logits: np.ndarray, resized_hw: tuple[int, int]) -> GridClasses:
    """Argmax and its softmax probability over the resized region of CxHxW `logits`: one pass over
    the classes (a running maximum), cheaper than argmax along the class axis, into reused buffers."""
    rh, rw = resized_hw
    scores = logits[:, :rh, :rw]
    top = scores[0].astype(np.float32)
    mask = np.zeros((rh, rw), np.uint8)
    for c in range(1, scores.shape[0]):
        np.copyto(mask, np.uint8(c), where=scores[c] > top)
        np.maximum(top, scores[c], out=top)
    total = np.zeros((rh, rw), np.float32)
    term = np.empty((rh, rw), np.float32)
    for c in range(scores.shape[0]):
        np.subtract(scores[c], top, out=term)
        total += np.exp(term, out=term)
    return GridClasses(scores, mask, np.divide(1.0, total, out=total))


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
    classes: GridClasses | None = field(default=None, compare=False, repr=False)
    """The class decision on the grid, as `read_pass` took it (None: not yet taken)."""

    def grid(self) -> GridClasses:
        """The class decision inside the resized region (taken now if `read_pass` did not)."""
        if self.classes is not None:
            return self.classes
        return grid_classes(self.logits, self.prepared.geometry.resized_hw)

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
    """What the scale search needs of decoded outputs: the red-cell size and the confidence (mean
    top-class probability), read on the grid; the class decision is kept for the segmentation."""
    classes = grid_classes(logits, prepared.geometry.resized_hw)
    diameter = rbc_diameter_from_mask(classes.mask)
    measured = None if diameter is None else diameter / prepared.geometry.scale
    confidence = float(classes.top_prob.mean())
    return NetworkPass(prepared, logits, heat, measured, confidence, runs, classes)


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
