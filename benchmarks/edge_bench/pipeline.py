"""The device pipeline, one field at a time, with every stage timed separately.

Stages run the device's own modules (camera, analyser, result builder, outbox, MQTT publisher).
A stage whose module is not installed, or that needs something absent (a broker, a diagnosis
model), is reported as not available with the reason; it is never replaced by a stand-in.

Every timed run executes all available stages in order on the same field; the end-to-end time is
the wall time of that whole run, so it includes the hand-over between stages.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from benchmarks.edge_bench.frames import BenchFrame
from benchmarks.edge_bench.timing import Stats, ratio, summarize, time_call

STAGE_NAMES = ("capture", "quality", "preprocess", "inference", "postprocess", "diagnosis", "outbox", "publish")
State = dict[str, Any]


@dataclass
class Stage:
    """One timed step; `run` reads and extends the run's state. `run is None`: not available."""

    name: str
    note: str
    run: Callable[[State], None] | None = None
    samples_ms: list[float] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return self.run is not None

    def to_dict(self) -> dict[str, Any]:
        stats = summarize(self.samples_ms).to_dict() if self.samples_ms else None
        return {"name": self.name, "available": self.available, "note": self.note, "latency_ms": stats}


def module_missing(name: str) -> str | None:
    """Why a runtime module cannot be used ('<name> is not installed'), or None when it can."""
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"{name} is not installed"


@dataclass
class Pipeline:
    """Stages in device order plus what they share (the field, the analyser, the outbox...)."""

    stages: list[Stage]
    state: State
    closers: list[Callable[[], None]] = field(default_factory=list)
    end_to_end_ms: list[float] = field(default_factory=list)
    last: State = field(default_factory=dict)

    def run_once(self, record: bool) -> None:
        """One field through every available stage; `record` keeps the timings. Each run starts
        from the shared state only, and only the latest run's state is kept (`last`): a run's
        state holds frame-size masks, so keeping every one would grow the process run by run."""
        state = dict(self.state)

        def body() -> None:
            for stage in self.stages:
                if stage.run is not None:
                    elapsed, _ = time_call(lambda: stage.run(state))
                    if record:
                        stage.samples_ms.append(elapsed)

        total, _ = time_call(body)
        if record:
            self.end_to_end_ms.append(total)
        self.last = state

    def measure(self, *, warmup: int, runs: int) -> Stats:
        """Warm-up runs, then timed runs; the end-to-end summary (stages keep their own samples)."""
        return measure_interleaved([self], warmup=warmup, runs=runs)[0]

    def stage_dicts(self) -> list[dict[str, Any]]:
        """Every stage's figures with its share of the mean end-to-end time (shares add up to at
        most 1; the rest is the hand-over between stages)."""
        total = summarize(self.end_to_end_ms).mean if self.end_to_end_ms else None
        rows = []
        for stage in self.stages:
            row = stage.to_dict()
            row["share"] = ratio(row["latency_ms"]["mean"], total) if row["latency_ms"] else None
            rows.append(row)
        return rows

    def close(self) -> None:
        for closer in reversed(self.closers):
            closer()


def interleave_block(runs: int) -> int:
    """Runs per block when pipelines take turns: four blocks each, so two pipelines alternate
    A B B A A B B A (more: A B C D D C B A ...) and machine drift (another process's load)
    falls on all alike."""
    return max(1, math.ceil(runs / 4))


def measure_interleaved(pipelines: list[Pipeline], *, warmup: int, runs: int) -> list[Stats]:
    """Warm every pipeline up, then time them in turns of `interleave_block` runs, the order
    reversed every turn (A B C, C B A, ...); each pipeline's end-to-end summary, in the given order.

    Turns are blocks, not single runs: a runtime whose threads spin-wait after a run (PyTorch; ONNX
    Runtime without `session.force_spinning_stop`) would make alternating models compete with each
    other's spinning threads."""
    for pipeline in pipelines:
        for _ in range(warmup):
            pipeline.run_once(record=False)
    block, done, turn = interleave_block(runs), 0, 0
    while done < runs:
        n = min(block, runs - done)
        for pipeline in (pipelines if turn % 2 == 0 else pipelines[::-1]):
            for _ in range(n):
                pipeline.run_once(record=True)
        done, turn = done + n, turn + 1
    return [summarize(p.end_to_end_ms) for p in pipelines]


# --------------------------------------------------------------------------- stage builders


def capture_stage(frame: BenchFrame) -> tuple[Stage, Callable[[], None] | None]:
    """The device's folder camera reading and decoding the field's file."""
    missing = module_missing("runtime.capture.cameras")
    if missing:
        return Stage("capture", f"{missing}; the field is handed over in memory"), None
    from runtime.capture.cameras import make_camera
    from runtime.contracts.config import FolderCameraConfig

    camera = make_camera(FolderCameraConfig(path=str(frame.file.parent), pattern=frame.file.name))

    def run(state: State) -> None:
        captured = camera.capture()
        state["frame"] = captured.image

    note = f"FolderCamera: read + decode {frame.file.suffix.lstrip('.').upper()} {frame.hw[1]}x{frame.hw[0]}"
    return Stage("capture", note, run), camera.close


def analysis_stages(analyzer: Any, um_per_px: float | None) -> list[Stage]:
    """Quality gate, preprocessing, inference and post-processing: the analyser's own stages."""
    from runtime.analysis.analyzer import derived_estimates

    def quality(state: State) -> None:
        state["quality"], state["scale"] = analyzer.check_quality(state["frame"], um_per_px)

    def preprocess(state: State) -> None:
        state["prepared"] = analyzer.preprocess(state["frame"], state["scale"])

    def infer(state: State) -> None:
        state["passes"] = analyzer.infer(state["prepared"], state["frame"])

    def postprocess(state: State) -> None:
        seg, found, area = analyzer.postprocess(state["passes"], um_per_px)
        counts = found.cells.counts
        state.update(mask=seg.mask, scale=seg.scale, counts=counts, area_pct=area, segmentation=seg, found=found,
                     um_per_px=um_per_px, derived=derived_estimates(seg.mask, counts, um_per_px, seg.geometry.frame_hw))

    scale_note = "calibrated um/px" if um_per_px is not None else "red-cell size estimated from the frame"
    return [
        Stage("quality", f"scale decision ({scale_note}) + focus/exposure/coverage", quality),
        Stage("preprocess", "resample, pad, normalise (runtime.inference.preprocess)", preprocess),
        Stage("inference", "ONNX Runtime session.run: the card's inference plan (uncalibrated: scale search, 3-4 passes; flip-averaged final pass: +2)", infer),
        Stage("postprocess", "final pass on the network grid -> mask + centres, cells (runtime.analysis.counting, "
              "mapped to frame pixels), counts, area %",
              postprocess),
    ]


def diagnosis_stage(analyzer: Any, sample: Any, note: str) -> Stage:
    """The field folded into its sample's summary, then the diagnoser on the sample (as Analyzer.analyze)."""
    if analyzer.diagnoser is None:
        return Stage("diagnosis", note)
    from runtime.contracts.sample import SampleSummary

    def run(state: State) -> None:
        # Every run is the first field of its sample, as a single-field capture would be.
        history = SampleSummary(sample.context.sample_id)
        quality = state["quality"]
        history.add_field(quality.accepted, quality.reasons, state["counts"], state["area_pct"], state["derived"])
        state["diagnosis"] = analyzer.diagnose(sample, history)

    return Stage("diagnosis", note, run)


def result_message(state: State, model_info: dict[str, Any], sample: Any, seq: int, device_id: str) -> dict[str, Any]:
    """The validated message the device would send for this run: result/2, with every cell and
    the review verdict, when the post-processing stage found cells (result/1 without them)."""
    from runtime.analysis.analyzer import FrameAnalysis
    from runtime.analysis.result import build_result

    analysis = FrameAnalysis(
        quality=state["quality"],
        scale=state["scale"],
        mask=state["mask"],
        counts=state["counts"],
        area_pct=state["area_pct"],
        derived=state["derived"],
        diagnosis=state.get("diagnosis"),
        timings_ms={},
        cells=state["found"].cells if "found" in state else None,
        found=state.get("found"),
        um_per_px=state.get("um_per_px"),
        segmentation=state.get("segmentation"),
    )
    return build_result(analysis, device_id=device_id, seq=seq, sample=sample, model=model_info)
