"""The typed sections of a model card (`preprocess`, `inference`) and their one reader.

A card is written by the export and read on the device; a key the device does not know means the
card and the runtime disagree, so it is an error rather than something silently dropped. The
sections are pydantic models of the one validation engine (runtime.contracts.validation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from runtime.contracts.validation import ListTuple, Section, rule, validate_section

Positive = Annotated[float, Field(gt=0)]


class PreprocessParams(Section):
    """Everything that defines the tensor a model was trained on. Stored in the model card."""

    section_path: ClassVar[str] = "preprocess"

    version: Annotated[int, Field(ge=1)] = 1
    color_order: Literal["RGB", "BGR"] = "RGB"
    target_rbc_diameter_px: Positive = 40.0
    nominal_rbc_diameter_um: Positive = 7.5
    intensity: Literal["fixed", "per_image"] = "fixed"
    mean: Annotated[tuple[float, float, float], ListTuple] = (0.5, 0.5, 0.5)
    std: Annotated[tuple[Positive, Positive, Positive], ListTuple] = (0.25, 0.25, 0.25)
    stride: Annotated[int, Field(ge=1, le=1024)] = 16
    min_scale: Positive = 0.1
    max_scale: Positive = 4.0

    @field_validator("stride")
    @classmethod
    def _power_of_two(cls, stride: int) -> int:
        if stride & (stride - 1):
            raise ValueError(f"must be a power of two, got {stride}")
        return stride

    @model_validator(mode="after")
    def _scale_order(self) -> "PreprocessParams":
        rule(self.min_scale <= self.max_scale, "min_scale", f"must not exceed max_scale ({self.max_scale:g})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.to_plain()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreprocessParams":
        """From a card's `preprocess` section; unknown keys are an error."""
        return validate_section(cls, data, cls.section_path)


class InferencePlan(Section):
    """How a model's passes are planned on a frame; stored in the model card (`inference`).

    `measured_diameter_ratio` is the red-cell diameter this model's masks show (as
    `rbc_diameter_from_mask` measures it) over the labelled diameter, with the frame at the right
    scale: each model draws cells a little larger or smaller, so the measurement is divided by it
    before it sets the scale (fitted on training frames at export, export.scale_fit).
    """

    section_path: ClassVar[str] = "inference"

    measured_diameter_ratio: Annotated[float, Field(ge=0.5, le=2.0)] = 1.0
    candidates: Annotated[tuple[Positive, ...], ListTuple, Field(min_length=1, max_length=8)] = (1.0, 2.0)
    """Multiples of the classical guess tried first; the most confident of them is refined."""
    tolerance: Annotated[float, Field(ge=0, le=1)] = 0.05
    """A refinement pass runs when the corrected measurement differs from the assumed diameter by more."""
    refinements: Annotated[int, Field(ge=0, le=8)] = 2
    max_refinement_step: Annotated[float, Field(ge=1.0, le=16.0)] = 2.0
    """A refinement moves the assumed red-cell diameter by at most this factor: the coarse choice
    has settled the order of magnitude, and a frame with few whole cells can measure fragments."""
    flip_average: bool = False
    """Average the final pass's outputs with its horizontally and vertically flipped runs, on a
    frame whose scale was searched (no calibration)."""
    flip_when_calibrated: bool = False
    """The same on a calibrated frame. Off by default: a calibrated field then costs one network
    run. For the version-4 model the two flipped runs cost more than half the calibrated field's
    end-to-end time for a small gain (docs/segmentation.md, "One pass when calibrated")."""
    wbc_border_band: Annotated[float, Field(ge=0, le=4)] = 0.25
    wbc_border_min_prob: Annotated[float, Field(gt=0, le=1)] = 0.15
    """Within `wbc_border_band` red-cell diameters of the frame's edge a pixel is white cell from
    this white-cell probability: a white cell cut by the border shows the network only part of
    itself (no nucleus, a sliver of cytoplasm) and its evidence is weaker there. Chosen on the
    1008 TXL-PBC train images, version-3 model: bands 0.25-0.5 and probabilities 0.1-0.3 tried,
    35 images with a wrong white-cell count without it, 31-32 from 0.15 to 0.3, 34-35 at 0.1.
    Rechecked on train alone (int8, current counting): 33 without, 28 at 0.15, 29-30 at 0.1-0.3."""
    wbc_min_confidence: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """A white cell clear of the frame's edge counts only from this confidence (its mean white-cell
    probability): how sure a model is of real white cells is its own, so the floor is the model's,
    chosen on train (docs/segmentation.md). 0: every white cell counts."""
    platelet_grow_px: Annotated[float, Field(ge=0, le=4)] = 0.0
    """Platelets grow into the plasma around them by this many network-grid pixels. A platelet
    is a few grid pixels across and the network, trained with an ignore band on box outlines,
    draws it a little small; fitted on training frames at export (export.scale_fit)."""

    @field_validator("candidates")
    @classmethod
    def _starts_with_one(cls, candidates: tuple[float, ...]) -> tuple[float, ...]:
        if candidates[0] != 1.0:
            raise ValueError(f"positive factors starting with 1.0, got {list(candidates)}")
        return candidates

    def to_dict(self) -> dict[str, Any]:
        return self.to_plain()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "InferencePlan":
        """From a card's `inference` section (absent: the defaults); unknown keys are an error."""
        if not data:
            return cls()
        return validate_section(cls, data, cls.section_path)


DEFAULT_PLAN = InferencePlan()
