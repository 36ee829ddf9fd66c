"""The headline of a report, built from the figures measured in the run (never measured apart):

- the field's end-to-end p50/p95, capture to published, with and without its calibration,
  and how much of it post-processing (cells, counts, area %) takes;
- the network alone at the field's input size: achieved MAC/s over this run's matrix-multiply
  peak of the same dtype and thread count;
- peak resident memory of a device process (the headline model's pipeline alone in a fresh
  process: device_process.py), beside the whole benchmark process's after the headline pipelines,
  and the load average around them;
  the headline pipelines take turns, so calibrated and uncalibrated (and new and baseline) see
  the same machine;
- with a baseline model set: new over baseline, p50 and p95, per calibration mode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.edge_bench.timing import ratio

MODES = {True: "calibrated", False: "uncalibrated"}


@dataclass(frozen=True)
class HeadlineBasis:
    """Which figures are the headline: the deployed variant at the pipeline's provider and threads."""

    variant: str
    provider: str
    threads: int
    input_hw: list[int]


@dataclass(frozen=True)
class HeadlineConditions:
    """What the machine was like while the headline pipelines ran."""

    load_average_before: list[float] | None
    load_average_after: list[float] | None
    peak_rss_mb: float  # the whole benchmark process's, after the headline pipelines
    pipelines: int  # measured together, each with its own session, all alive at once
    runs_per_turn: int | None  # None: a single pipeline, nothing to take turns with


def _stage_p50(stages: dict[str, dict[str, Any]], name: str) -> float | None:
    stage = stages.get(name)
    return stage["latency_ms"]["p50"] if stage and stage["latency_ms"] else None


def field_figures(pipeline: dict[str, Any] | None) -> dict[str, Any] | None:
    """End-to-end p50/p95 of one pipeline, its inference and post-processing p50, and
    post-processing's share of the mean end-to-end time."""
    if pipeline is None:
        return None
    stages = {s["name"]: s for s in pipeline["stages"]}
    e2e = pipeline["end_to_end_ms"]
    post = stages.get("postprocess")
    return {
        "n": e2e["n"],
        "p50_ms": e2e["p50"],
        "p95_ms": e2e["p95"],
        "inference_p50_ms": _stage_p50(stages, "inference"),
        "postprocess_p50_ms": _stage_p50(stages, "postprocess"),
        "postprocess_share": post.get("share") if post else None,
    }


def set_figures(pipelines: list[dict[str, Any]], models: list[dict[str, Any]], model_set: str,
                variant: str) -> dict[str, Any] | None:
    """The headline figures of one model set, or None when the run had no such set."""
    chosen = {p["calibrated"]: p for p in pipelines if p["model_set"] == model_set and p["variant"] == variant}
    if not chosen:
        return None
    model = next(m for m in models if m["model_set"] == model_set and m["variant"] == variant)
    figures = {"model": {k: model[k] for k in ("path", "name", "version", "sha256")}}
    figures.update({name: field_figures(chosen.get(flag)) for flag, name in MODES.items()})
    return figures


def over_baseline(new: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any] | None:
    """new / baseline of p50 and p95 per calibration mode (below 1: the new set is faster)."""
    if baseline is None:
        return None
    out = {}
    for mode in MODES.values():
        for pct in ("p50", "p95"):
            a, b = new.get(mode), baseline.get(mode)
            out[f"{mode}_{pct}"] = ratio(a[f"{pct}_ms"] if a else None, b[f"{pct}_ms"] if b else None)
    return out


def network_figures(sweep: list[dict[str, Any]], basis: HeadlineBasis) -> dict[str, Any] | None:
    """The sweep point of the headline model at the field's input size: MACs, p50, achieved
    GMAC/s and its share of the matmul peak measured beside it."""
    point = next((p for p in sweep if p["variant"] == basis.variant and p["provider"] == basis.provider
                  and p["threads"] == basis.threads and p["input_hw"] == list(basis.input_hw)), None)
    if point is None:
        return None
    return {
        "input_hw": point["input_hw"],
        "macs": point["macs"],
        "p50_ms": point["latency_ms"]["p50"],
        "gmacs_per_s": point["gmacs_per_s"],
        "peak_kernel": point["peak_kernel"],
        "peak_gmacs_per_s": point["peak_gmacs_per_s"],
        "of_peak": point["efficiency"],
    }


def headline(pipelines: list[dict[str, Any]], sweep: list[dict[str, Any]], models: list[dict[str, Any]],
             basis: HeadlineBasis, conditions: HeadlineConditions, device: dict[str, Any]) -> dict[str, Any]:
    """The report's `headline` section; `device` is run.device_figures' measurement."""
    new = set_figures(pipelines, models, "new", basis.variant)
    if new is None:
        raise ValueError(f"no pipeline of the new {basis.variant} model to make a headline of")
    baseline = set_figures(pipelines, models, "baseline", basis.variant)
    return {
        **asdict(basis),
        "new": new,
        "baseline": baseline,
        "new_over_baseline": over_baseline(new, baseline),
        "network": network_figures(sweep, basis),
        **asdict(conditions),
        "device_process": device,
    }
