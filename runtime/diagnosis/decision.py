"""Connects the device pipeline to the diagnosis package: lab values + this field's smear -> diagnosis.

The guideline engine needs the sample's lab values; without any, a capture has no diagnosis
(`null` in the result) rather than an 'indeterminate' one on every field. The smear's contribution
is the red-cell findings that make HbA1c unreliable, from the sample's fields so far (means over
its accepted fields: counts, red-cell area and, when calibrated, field area and red-cell size).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from runtime.contracts.config import DiagnosisConfig
from runtime.contracts.errors import ModelError, SmearscopeError
from runtime.contracts.sample import SampleField, SampleSummary

log = logging.getLogger(__name__)


def smear_values(smear: SampleSummary) -> dict[str, float]:
    """The sample's smear so far (means over its accepted fields) under the diagnosis package's input
    names; empty when no field was accepted."""
    data = smear.to_dict()
    means, area = data["mean_counts_per_field"], data["mean_area_pct"]
    if not means:
        return {}
    values: dict[str, float] = {
        "rbc_per_field": float(means["rbc"]),
        "wbc_per_field": float(means["wbc"]),
        "platelet_per_field": float(means["platelet"]),
        "rbc_area_pct": float(area["rbc"]),
        "smear_fields": float(data["accepted_fields"]),
    }
    if data.get("mean_field_area_mm2"):
        values["field_area_um2"] = float(data["mean_field_area_mm2"]) * 1e6
    if data.get("mean_rbc_area_um2"):
        values["mean_rbc_diameter_um"] = round(2.0 * math.sqrt(data["mean_rbc_area_um2"] / math.pi), 3)
    return values


class GuidelineDiagnoser:
    """A Diagnoser (runtime.analysis.analyzer) over runtime.diagnosis.diagnose, with the network when present."""

    def __init__(self, guideline: str = "who", network: Any | None = None) -> None:
        self.guideline = guideline
        self.network = network

    @classmethod
    def from_config(cls, config: DiagnosisConfig) -> "GuidelineDiagnoser | None":
        """None when disabled; the network is optional (a missing shipped model only logs a note)."""
        if not config.enabled:
            return None
        from runtime.diagnosis import DiagnosisNetwork
        from runtime.diagnosis.network import default_model_path

        network = None
        path = Path(config.model) if config.model else default_model_path()
        if config.model or path.is_file():
            try:
                network = DiagnosisNetwork.load(path)
            except ModelError as exc:
                if config.model:
                    raise
                log.warning("diagnosis network not used: %s", exc)
        return cls(config.guideline, network)

    def __call__(self, sample: SampleField | None, smear: SampleSummary) -> dict[str, Any] | None:
        from runtime.diagnosis import diagnose

        labs = dict(sample.context.labs) if sample is not None else {}
        if not labs:
            return None
        inputs = {**labs, **smear_values(smear)}
        try:
            report = diagnose(inputs, guideline=self.guideline, network=self.network)
        except SmearscopeError as exc:
            # Bad lab values must not lose the smear result: report them in the diagnosis instead.
            return {"guideline": self.guideline, "status": "indeterminate", "category": None,
                    "flags": [f"lab values not usable: {exc}"], "criteria": [], "followup": []}
        return report.to_dict()
