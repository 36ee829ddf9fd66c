"""What the result page shows a clinician, taken from a stored result (result/1 or result/2).

The device's diagnosis is shown as it was sent. Beside it, the server evaluates the same lab values
and this field's smear under each guideline (WHO, ADA, NICE; rules only, no network), so a reader
sees where they agree; and it lists which of the network's inputs the lab values supplied, and
which were missing or set aside (HbA1c when the smear makes it unreliable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime.contracts.errors import SmearscopeError

GUIDELINES = ("who", "ada", "nice")
GUIDELINE_NAMES = {"who": "WHO", "ada": "ADA", "nice": "NICE"}


@dataclass
class NetworkInputs:
    given: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)
    error: str | None = None


def smear_inputs(result: dict[str, Any]) -> dict[str, float]:
    """This field's smear under the diagnosis package's input names (as the device builds them)."""
    from runtime.diagnosis.decision import smear_values
    from runtime.contracts.sample import SampleSummary

    quality = result.get("quality") or {}
    summary = SampleSummary((result.get("sample") or {}).get("sample_id", "sample"))
    summary.add_field(bool(quality.get("accepted")), quality.get("reasons") or [], result.get("counts") or {},
                      result.get("area_pct") or {}, result.get("derived"))
    return smear_values(summary)


def network_inputs(result: dict[str, Any]) -> NetworkInputs:
    """Which of the network's features the sample's lab values gave it."""
    from runtime.diagnosis import patient_inputs_from_mapping
    from runtime.diagnosis.features import FEATURES, feature_vector

    labs = (result.get("sample") or {}).get("labs") or {}
    out = NetworkInputs()
    try:
        patient = patient_inputs_from_mapping({k: v for k, v in labs.items() if v is not None})
    except (SmearscopeError, ValueError) as exc:
        out.error = f"lab values not usable: {exc}"
        return out
    excluded = bool(((result.get("diagnosis") or {}).get("hba1c_excluded") or {}).get("excluded"))
    _, mask = feature_vector(patient, exclude_hba1c=excluded)
    _, full = feature_vector(patient)
    for name, used, present in zip(FEATURES, mask, full):
        if used:
            out.given.append(name)
        elif present:
            out.set_aside.append(name)
        else:
            out.missing.append(name)
    return out


def guideline_verdicts(result: dict[str, Any]) -> dict[str, dict[str, Any] | str]:
    """Each guideline's verdict on this result's lab values and smear (a message where it cannot)."""
    from runtime.diagnosis import diagnose

    labs = {k: v for k, v in ((result.get("sample") or {}).get("labs") or {}).items() if v is not None}
    if not labs:
        return {}
    inputs = {**labs, **smear_inputs(result)}
    out: dict[str, dict[str, Any] | str] = {}
    for guideline in GUIDELINES:
        try:
            out[guideline] = diagnose(inputs, guideline=guideline).to_dict()
        except SmearscopeError as exc:
            out[guideline] = f"not evaluated: {exc}"
    return out


def amended_counts(result: dict[str, Any], reviews: list[dict[str, Any]]) -> dict[str, int] | None:
    """Counts after every amendment in order: each reclassification moves one cell between classes,
    a corrected count sets that class; None when nothing was amended."""
    amendments = [r["changes"] for r in reviews if r["action"] == "amend"]
    if not amendments:
        return None
    counts = {k: int(v) for k, v in (result.get("counts") or {}).items() if isinstance(v, int)}
    for changes in amendments:
        for item in changes.get("reclassify", []):
            if counts.get(item.get("from"), 0) > 0 and item.get("to") in counts:
                counts[item["from"]] -= 1
                counts[item["to"]] += 1
        counts.update({k: int(v) for k, v in (changes.get("counts") or {}).items()})
    return counts


def cell_classes(reviews: list[dict[str, Any]]) -> dict[str, str]:
    """Cell id -> class as reclassified by reviewers (the latest wins)."""
    out: dict[str, str] = {}
    for review in reviews:
        for item in review["changes"].get("reclassify", []) if review["action"] == "amend" else []:
            out[str(item.get("cell"))] = item.get("to")
    return out
