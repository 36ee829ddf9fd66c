"""The device pipeline on the benchmark field, per model set and calibration, measured in groups.

A field is analysed two ways on a device: with the microscope's calibration (one scale, the
card's passes at it) and without one (the red-cell size estimated, then the card's scale search).
Both are measured for the headline model in one group, with the baseline model set's pipelines
in the same group when there is one: they all take turns on the same field in the same process
(see pipeline.measure_interleaved), so neither calibrated against uncalibrated nor new against
baseline is skewed by a load that changed in between.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.edge_bench.frames import BenchFrame
from benchmarks.edge_bench.models import ModelFile
from benchmarks.edge_bench.pipeline import Pipeline, measure_interleaved
from benchmarks.edge_bench.timing import Stats, measure, rate_per_second, time_call

MODEL_SETS = ("new", "baseline")
#: Runs of the device's one-call Analyzer.analyze on the same field: a cross-check, not a figure.
CROSS_CHECK_RUNS = 3


@dataclass(frozen=True)
class PipelineSpec:
    """One pipeline to measure: which model, from which set, with or without the calibration."""

    model: ModelFile
    model_set: str
    calibrated: bool

    @property
    def label(self) -> str:
        return f"{self.model_set} {self.model.variant} {'calibrated' if self.calibrated else 'uncalibrated'}"


@dataclass(frozen=True)
class RunSetup:
    """How every pipeline of a run is timed and where its scratch files go."""

    provider: str
    threads: int
    warmup: int
    runs: int
    mqtt: str
    workdir: Path


@dataclass
class BuiltPipeline:
    """A pipeline ready to run, with what was measured while building it."""

    spec: PipelineSpec
    pipeline: Pipeline
    analyzer: Any
    sample: Any
    um_per_px: float | None
    runs_on: str
    session_create_ms: float
    first_inference_ms: float


def headline_model(models: list[ModelFile]) -> ModelFile:
    """The deployed variant: int8 when the set has one, else fp32."""
    return next((m for m in models if m.variant == "int8"), models[0])


def plan_groups(models: list[ModelFile], baseline: ModelFile | None, calibrated: bool) -> list[list[PipelineSpec]]:
    """Groups measured together. First the headline group: the headline model calibrated (when the
    field has a calibration) and uncalibrated, each beside the baseline's when there is one. Then
    every other variant of the new set alone, with the field's calibration when it has one (it
    shows what the headline variant saves end to end, not the calibration's cost)."""
    modes = [True, False] if calibrated else [False]
    main = headline_model(models)
    sets = [("new", main)] + ([("baseline", baseline)] if baseline else [])
    groups = [[PipelineSpec(model, name, mode) for mode in modes for name, model in sets]]
    groups += [[PipelineSpec(m, "new", modes[0])] for m in models if m is not main]
    return groups


def build_pipeline(spec: PipelineSpec, frame: BenchFrame, setup: RunSetup) -> BuiltPipeline:
    """Load the model as the device does and assemble every stage, each in its own scratch folder."""
    from benchmarks.edge_bench.delivery import delivery_stages, resolve_broker
    from benchmarks.edge_bench.diagnosis import bench_diagnoser, bench_sample
    from benchmarks.edge_bench.pipeline import analysis_stages, capture_stage, diagnosis_stage
    from runtime.analysis.analyzer import Analyzer
    from runtime.inference.model import SegmentationModel
    from runtime.inference.session import SessionOptions

    workdir = Path(tempfile.mkdtemp(prefix=spec.label.replace(" ", "-") + "-", dir=setup.workdir))
    um_per_px = frame.um_per_px if spec.calibrated else None
    session_options = SessionOptions(providers=(setup.provider,), intra_op_threads=setup.threads, warmup=False)
    create_ms, segmenter = time_call(lambda: SegmentationModel.load(spec.model.path, session_options))
    diagnoser, diagnoser_note = bench_diagnoser()
    analyzer = Analyzer(segmenter, diagnoser=diagnoser)
    # First inference on this field's tensor, before any warm-up.
    _, scale = analyzer.check_quality(frame.image, um_per_px)
    prepared = analyzer.preprocess(frame.image, scale)
    first_ms, _ = time_call(lambda: segmenter.predict(prepared))

    capture, close_camera = capture_stage(frame)
    sample = bench_sample()
    diagnosis = diagnosis_stage(analyzer, sample, diagnoser_note)
    broker = resolve_broker(setup.mqtt, workdir)
    delivery, closers = delivery_stages(broker, workdir, segmenter.info(), sample)
    pipeline = Pipeline([capture, *analysis_stages(analyzer, um_per_px), diagnosis, *delivery], {"frame": frame.image})
    if close_camera:
        pipeline.closers.append(close_camera)
    pipeline.closers.extend(closers)
    if not isinstance(broker, str):
        pipeline.closers.append(broker.stop)
    return BuiltPipeline(spec, pipeline, analyzer, sample, um_per_px, segmenter.loaded.providers[0], create_ms, first_ms)


def run_group(specs: list[PipelineSpec], frame: BenchFrame, setup: RunSetup) -> list[dict[str, Any]]:
    """Build the group's pipelines, time them in turns, close them; one report entry each."""
    built: list[BuiltPipeline] = []
    try:
        for spec in specs:
            built.append(build_pipeline(spec, frame, setup))
        e2e = measure_interleaved([b.pipeline for b in built], warmup=setup.warmup, runs=setup.runs)
    finally:
        for b in built:
            b.pipeline.close()
    return [pipeline_entry(b, stats, frame, setup, len(specs) > 1) for b, stats in zip(built, e2e)]


def pipeline_entry(built: BuiltPipeline, e2e: Stats, frame: BenchFrame, setup: RunSetup,
                   interleaved: bool) -> dict[str, Any]:
    """The report's figures of one measured pipeline, with the device's one-call analysis beside them."""
    analyzer, sample, um_per_px = built.analyzer, built.sample, built.um_per_px
    analyze = measure(lambda: analyzer.analyze(frame.image, um_per_px=um_per_px, sample=sample),
                      warmup=0, runs=min(setup.runs, CROSS_CHECK_RUNS))
    pipeline = built.pipeline
    last = pipeline.last
    counts = {k: int(v) for k, v in (last.get("counts") or {}).items()}
    counts["total"] = sum(counts.values())
    fields_per_s = rate_per_second(1.0, e2e.mean)
    return {
        "model_set": built.spec.model_set,
        "variant": built.spec.model.variant,
        "calibrated": built.spec.calibrated,
        "um_per_px": um_per_px,
        "interleaved": interleaved,
        "provider": setup.provider,
        "runs_on": built.runs_on,
        "threads": setup.threads,
        "session_create_ms": built.session_create_ms,
        "first_inference_ms": built.first_inference_ms,
        "stages": pipeline.stage_dicts(),
        "end_to_end_ms": e2e.to_dict(),
        "analyze_ms": analyze.to_dict(),
        "fields_per_s": fields_per_s,
        "cells_per_field": counts,
        "cells_per_min": None if fields_per_s is None else counts["total"] * fields_per_s * 60.0,
    }
