"""The diagnosis result: typed records whose to_dict() fits the `diagnosis` object of result/1."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Criterion:
    """A cut-point that a value reached, in the unit the value was entered in."""

    test: str
    label: str
    value: float
    unit: str
    threshold: float
    guideline: str
    status: str
    category: str
    citation: str
    comparison: str = ">="

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test, "label": self.label, "value": self.value, "unit": self.unit,
            "comparison": self.comparison, "threshold": self.threshold, "guideline": self.guideline,
            "status": self.status, "category": self.category, "citation": self.citation,
        }


@dataclass(frozen=True)
class HbA1cReliability:
    excluded: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"excluded": self.excluded, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class TypeAssessment:
    """label: type_1 | type_2 | uncertain | gestational | insufficient_information | not_applicable."""

    label: str
    probabilities: dict[str, float] | None
    basis: list[dict[str, Any]]
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probabilities": self.probabilities, "basis": self.basis, "note": self.note}


@dataclass(frozen=True)
class FollowUpItem:
    test: str
    reason: str
    guideline: str
    citation: str

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "reason": self.reason, "guideline": self.guideline, "citation": self.citation}


@dataclass(frozen=True)
class DiagnosisReport:
    guideline: str
    status: str
    category: str | None
    criteria: list[Criterion]
    confirmation_needed: bool
    flags: list[str]
    hba1c_excluded: HbA1cReliability
    probabilities: dict[str, float] | None
    type: TypeAssessment
    followup: list[FollowUpItem]
    tests_evaluated: list[str]
    population: str
    confirmation_reason: str | None = None
    network: dict[str, list[str]] | None = None  # inputs the network used / could not use

    @property
    def model_class(self) -> str | None:
        """The network's most probable class, or None without a network result."""
        if not self.probabilities:
            return None
        return max(self.probabilities, key=self.probabilities.get).removeprefix("p_")

    def to_dict(self) -> dict[str, Any]:
        return {
            "guideline": self.guideline,
            "status": self.status,
            "category": self.category,
            "population": self.population,
            "criteria": [c.to_dict() for c in self.criteria],
            "tests_evaluated": list(self.tests_evaluated),
            "confirmation_needed": self.confirmation_needed,
            "confirmation_reason": self.confirmation_reason,
            "flags": list(self.flags),
            "hba1c_excluded": self.hba1c_excluded.to_dict(),
            "probabilities": dict(self.probabilities) if self.probabilities else None,
            "network": dict(self.network) if self.network else None,
            "model_class": self.model_class,
            "type": self.type.to_dict(),
            "followup": [f.to_dict() for f in self.followup],
        }
