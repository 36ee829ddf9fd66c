"""Comparing a model's outputs with a reference's: names first, then shapes, then values.

Outputs are matched by name, never by position, and shapes are compared before any subtraction:
numpy would broadcast a (1, 4, 1, 1) output against (1, 4, 64, 64) and report a small difference
for a model that is plainly wrong. Every mismatch is collected, so one error lists them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from runtime.contracts.errors import ModelError


class OutputMismatchError(ModelError):
    """A model's outputs differ from the reference's; the message lists every mismatch."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("outputs differ:\n  - " + "\n  - ".join(problems))


@dataclass
class OutputComparison:
    """What comparing two sets of named outputs found; `problems` in the order names, shapes, values."""

    label: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    non_finite: list[str] = field(default_factory=list)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    limit: float | None = None

    @property
    def structural(self) -> list[str]:
        """Name and shape problems: values cannot be compared where these exist."""
        out = []
        if self.missing:
            out.append(f"{self.label}: missing output(s) {', '.join(self.missing)}")
        if self.unexpected:
            out.append(f"{self.label}: unexpected output(s) {', '.join(self.unexpected)}")
        for name, (expected, actual) in self.shapes.items():
            out.append(f"{self.label}: output {name} has shape {list(actual)}, expected {list(expected)}")
        return out

    @property
    def problems(self) -> list[str]:
        out = self.structural
        out += [f"{self.label}: output {name} has NaN or infinite values" for name in self.non_finite]
        if self.limit is not None:
            out += [f"{self.label}: max |Δ {name}| = {diff:.3g} > {self.limit:g}"
                    for name, diff in self.max_abs_diff.items() if not diff <= self.limit]
        return out


def compare_outputs(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], label: str,
                    max_abs_diff: float | None = None) -> OutputComparison:
    """Compare `actual` with `expected` output by output; values only where names and shapes agree."""
    result = OutputComparison(label=label, limit=max_abs_diff)
    result.missing = [name for name in expected if name not in actual]
    result.unexpected = [name for name in actual if name not in expected]
    for name in expected:
        if name not in actual:
            continue
        want, got = np.asarray(expected[name]), np.asarray(actual[name])
        if want.shape != got.shape:
            result.shapes[name] = (want.shape, got.shape)
            continue
        if not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
            result.non_finite.append(name)
            continue
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        result.max_abs_diff[name] = float(diff.max()) if diff.size else 0.0
    return result


def check_outputs(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], label: str,
                  max_abs_diff: float) -> dict[str, float]:
    """`compare_outputs`, raising OutputMismatchError that lists every problem; returns max |Δ| per output."""
    result = compare_outputs(expected, actual, label, max_abs_diff)
    if result.problems:
        raise OutputMismatchError(result.problems)
    return result.max_abs_diff
