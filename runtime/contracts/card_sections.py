"""The typed sections of a model card (`preprocess`, `inference`) and their one reader.

A card is written by the export and read on the device; a key the device does not know means the
card and the runtime disagree, so it is an error rather than something silently dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from runtime.contracts.errors import ConfigError

T = TypeVar("T")


def section_from_dict(cls: type[T], data: Mapping[str, Any], section: str, float_tuples: Iterable[str] = ()) -> T:
    """`cls(**data)` for a frozen dataclass, refusing unknown keys (ConfigError naming `section`)
    and turning the JSON lists named in `float_tuples` back into tuples of floats."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {', '.join(unknown)}")
    values = dict(data)
    for key in float_tuples:
        if key in values:
            values[key] = tuple(float(v) for v in values[key])
    return cls(**values)


@dataclass(frozen=True)
class PreprocessParams:
    """Everything that defines the tensor a model was trained on. Stored in the model card."""

    version: int = 1
    color_order: Literal["RGB", "BGR"] = "RGB"
    target_rbc_diameter_px: float = 40.0
    nominal_rbc_diameter_um: float = 7.5
    intensity: Literal["fixed", "per_image"] = "fixed"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    stride: int = 16
    min_scale: float = 0.1
    max_scale: float = 4.0

    def __post_init__(self) -> None:
        if self.color_order not in ("RGB", "BGR"):
            raise ConfigError(f"preprocess.color_order: must be RGB or BGR, got {self.color_order!r}")
        if self.intensity not in ("fixed", "per_image"):
            raise ConfigError(f"preprocess.intensity: must be fixed or per_image, got {self.intensity!r}")
        if self.target_rbc_diameter_px <= 0 or self.nominal_rbc_diameter_um <= 0:
            raise ConfigError("preprocess: red-cell diameters must be positive")
        if self.stride < 1 or self.stride & (self.stride - 1):
            raise ConfigError(f"preprocess.stride: must be a power of two, got {self.stride}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("preprocess.mean/std: need three values each, std > 0")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessParams":
        """From a card's `preprocess` section; unknown keys are an error."""
        return section_from_dict(cls, data, "preprocess", float_tuples=("mean", "std"))


@dataclass(frozen=True)
class InferencePlan:
    """How a model's passes are planned on a frame; stored in the model card (`inference`).

    `measured_diameter_ratio` is the red-cell diameter this model's masks show (as
    `rbc_diameter_from_mask` measures it) over the labelled diameter, with the frame at the right
    scale: each model draws cells a little larger or smaller, so the measurement is divided by it
    before it sets the scale (fitted on training frames at export, export.scale_fit).
    """

    measured_diameter_ratio: float = 1.0
    candidates: tuple[float, ...] = (1.0, 2.0)
    """Multiples of the classical guess tried first; the most confident of them is refined."""
    tolerance: float = 0.05
    """A refinement pass runs when the corrected measurement differs from the assumed diameter by more."""
    refinements: int = 2
    max_refinement_step: float = 2.0
    """A refinement moves the assumed red-cell diameter by at most this factor: the coarse choice
    has settled the order of magnitude, and a frame with few whole cells can measure fragments."""
    flip_average: bool = False
    """Average the final pass's outputs with its horizontally and vertically flipped runs."""
    wbc_border_band: float = 0.25
    wbc_border_min_prob: float = 0.15
    """Within `wbc_border_band` red-cell diameters of the frame's edge a pixel is white cell from
    this white-cell probability: a white cell cut by the border shows the network only part of
    itself (no nucleus, a sliver of cytoplasm) and its evidence is weaker there. Chosen on the
    1008 TXL-PBC train images, version-3 model: bands 0.25-0.5 and probabilities 0.1-0.3 tried,
    35 images with a wrong white-cell count without it, 31-32 from 0.15 to 0.3, 34-35 at 0.1.
    Rechecked on train alone (int8, current counting): 33 without, 28 at 0.15, 29-30 at 0.1-0.3."""
    platelet_grow_px: float = 0.0
    """Platelets grow into the plasma around them by this many network-grid pixels. A platelet
    is a few grid pixels across and the network, trained with an ignore band on box outlines,
    draws it a little small; fitted on training frames at export (export.scale_fit)."""

    def __post_init__(self) -> None:
        if not 0.5 <= self.measured_diameter_ratio <= 2.0:
            raise ConfigError(f"inference.measured_diameter_ratio: must be 0.5-2, got {self.measured_diameter_ratio}")
        if not self.candidates or any(c <= 0 for c in self.candidates) or self.candidates[0] != 1.0:
            raise ConfigError(f"inference.candidates: positive factors starting with 1.0, got {list(self.candidates)}")
        if self.tolerance < 0 or self.refinements < 0:
            raise ConfigError("inference.tolerance and inference.refinements must not be negative")
        if self.max_refinement_step < 1.0:
            raise ConfigError(f"inference.max_refinement_step: must be >= 1, got {self.max_refinement_step}")
        if self.wbc_border_band < 0 or not 0.0 < self.wbc_border_min_prob <= 1.0:
            raise ConfigError("inference.wbc_border_band must not be negative and wbc_border_min_prob must be in (0, 1]")
        if not 0.0 <= self.platelet_grow_px <= 4.0:
            raise ConfigError(f"inference.platelet_grow_px: must be 0-4, got {self.platelet_grow_px}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["candidates"] = list(self.candidates)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "InferencePlan":
        """From a card's `inference` section (absent: the defaults); unknown keys are an error."""
        if not data:
            return cls()
        return section_from_dict(cls, data, "inference", float_tuples=("candidates",))


DEFAULT_PLAN = InferencePlan()
