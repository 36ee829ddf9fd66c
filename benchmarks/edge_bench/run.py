"""One edge-bench run: machine, peaks, MACs, the device pipeline, the sweep and the PyTorch
baseline, all in one process so every ratio compares figures measured minutes apart."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from benchmarks.edge_bench.frames import BenchFrame, load_frame
from benchmarks.edge_bench.machine import load_average, machine_info
from benchmarks.edge_bench.models import ModelFile, compute_providers, find_models
from benchmarks.edge_bench.report import SCHEMA_ID, headline_ratios, peak_rss_mb, validate_report
from benchmarks.edge_bench.timing import measure, rate_per_second, time_call

HW = tuple[int, int]
CPU = "CPUExecutionProvider"
Progress = Callable[[str], None]


@dataclass
class BenchOptions:
    """What to measure; `resolutions` may contain None for the field's own network input size."""

    model_dir: Path | None = None
    fp32: Path | None = None
    int8: Path | None = None
    image: Path | None = None
    um_per_px: float | None = None
    runs: int = 15
    warmup: int = 2
    threads: list[int] = field(default_factory=list)  # empty: 1 and all usable cores
    providers: list[str] = field(default_factory=list)  # empty: every provider present
    resolutions: list[HW | None] = field(default_factory=lambda: [None])
    peak_size: int = 1024
    torch: bool = True
    checkpoint: Path | None = None
    mqtt: str = "auto"
    quick: bool = False
    command: list[str] = field(default_factory=list)


def code_version() -> dict[str, Any]:
    """The smearscope version and, in a git checkout, the commit measured (for before/after compares)."""
    import subprocess

    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("smearscope")
    except PackageNotFoundError:
        __version__ = "unknown"

    root = Path(__file__).resolve().parents[2]
    commit = None
    if (root / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                 text=True, timeout=5)
            commit = out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"version": __version__, "git_commit": commit}


def usable_cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def field_network_hw(frame: BenchFrame, model: ModelFile) -> HW:
    """The network input size the one preprocessing gives this field."""
    from runtime.inference.preprocess import PreprocessParams, decide_scale, plan_geometry

    params = model.card.preprocess or PreprocessParams()
    scale = decide_scale(params, frame.image, um_per_px=frame.um_per_px)
    return plan_geometry(frame.hw, scale.scale, params.stride).padded_hw


def plan_steps(options: BenchOptions, models: list[ModelFile], providers: list[str], threads: list[int], sizes: list[HW]) -> int:
    peaks = 1
    macs = len(models) * len(sizes)
    pipelines = len(models)
    sweep = len(models) * len(providers) * len(threads) * len(sizes)
    profiles = len(models)
    torch_points = len(threads) * len(sizes) if options.torch else 0
    return peaks + macs + pipelines + sweep + profiles + torch_points


def run_benchmark(options: BenchOptions, progress: Progress = lambda label: None) -> dict[str, Any]:
    """Measure everything and return a validated edge-bench/1 report."""
    from benchmarks.edge_bench.macs import count_macs
    from benchmarks.edge_bench.peak import numpy_gemm_peak
    from benchmarks.edge_bench.profile import op_times, profile_events
    from benchmarks.edge_bench.sweep import SweepTiming, model_input, run_sweep

    machine = machine_info()
    models = find_models(options.model_dir, options.fp32, options.int8)
    present = compute_providers()
    providers = options.providers or present
    unknown = [p for p in providers if p not in present]
    if unknown:
        from runtime.contracts.errors import ConfigError

        raise ConfigError(f"--provider: {', '.join(unknown)} not in this ONNX Runtime build ({', '.join(present)})")
    threads = sorted(set(options.threads or [1, usable_cores()]))
    main_threads = max(threads)

    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        workdir = Path(tmp)
        frame = load_frame(workdir, options.image, options.um_per_px)
        field_hw = field_network_hw(frame, models[0])
        sizes: list[HW] = []
        for size in options.resolutions:
            hw = field_hw if size is None else tuple(size)
            if hw not in sizes:
                sizes.append(hw)  # type: ignore[arg-type]

        total = plan_steps(options, models, providers, threads, sizes)
        done = [0]

        def step(label: str) -> None:
            done[0] += 1
            progress(f"[{done[0]}/{total}] {label}")

        # 1. numpy's BLAS as a reference (the ORT peaks are measured inside the sweep)
        peaks = [numpy_gemm_peak(options.peak_size)]
        step("numpy GEMM peak")

        # 2. MACs of every model at every size
        macs = {}
        for model in models:
            for hw in sizes:
                macs[(model.variant, hw)] = count_macs(model.path, *hw)
                step(f"MACs {model.variant} {hw[0]}x{hw[1]}")

        # 3. the device pipeline, per model variant (int8 first: the deployed one)
        pipelines = []
        for model in sorted(models, key=lambda m: m.variant != "int8"):
            pipelines.append(run_pipeline(model, frame, options, providers[0], main_threads, workdir))
            step(f"pipeline {model.variant}")

        # 4. model-only sweep
        inputs = {hw: model_input(frame.image, hw, models[0].card) for hw in sizes}
        sweep, sweep_peaks = run_sweep(
            models, providers, threads, inputs, SweepTiming(options.warmup, options.runs, options.peak_size), macs,
            on_point=lambda p: step(f"sweep {p.variant} {p.runs_on} {p.threads}t {p.input_hw[0]}x{p.input_hw[1]}"),
        )
        # 5. where the time goes: ORT's per-operator profile at the field size
        op_profile = []
        profile_runs = min(options.runs, 5) + 1
        for model in models:
            _, events = profile_events(model.path, *field_hw, optimization="all", threads=main_threads,
                                       runs=profile_runs)
            ops = [vars(row) for row in op_times(events, profile_runs)]
            op_profile.append({"variant": model.variant, "threads": main_threads, "input_hw": list(field_hw),
                               "runs": profile_runs - 1, "ops": ops})
            step(f"operator profile {model.variant}")
        rss_before_torch = peak_rss_mb()

        # 6. PyTorch eager on the same inputs (last: importing torch inflates the process)
        torch_section = run_torch(options, models, threads, inputs, step)

    sweep_dicts = [p.to_dict() for p in sweep]
    basis_provider = CPU if CPU in providers else providers[0]
    machine["load_average_end"] = load_average()
    report = {
        "schema": SCHEMA_ID,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "command": options.command,
        "code": code_version(),
        "settings": {
            "quick": options.quick,
            "warmup": options.warmup,
            "runs": options.runs,
            "threads": threads,
            "providers": providers,
            "resolutions": [list(hw) for hw in sizes],
            "peak_size": options.peak_size,
            "frame": {"source": frame.source, "frame_hw": list(frame.hw), "network_hw": list(field_hw),
                      "um_per_px": frame.um_per_px},
        },
        "machine": machine,
        "peaks": [p.to_dict() for p in peaks + sweep_peaks],
        "models": [
            {**m.to_dict(), "macs": [macs[(m.variant, hw)].to_dict() for hw in sizes]} for m in models
        ],
        "pipelines": pipelines,
        "sweep": sweep_dicts,
        "op_profile": op_profile,
        "torch": torch_section,
        "ratios": {
            **headline_ratios(sweep_dicts, torch_section["points"], basis_provider, main_threads, list(field_hw)),
            "by_threads": [
                headline_ratios(sweep_dicts, torch_section["points"], basis_provider, t, list(field_hw)) for t in threads
            ],
        },
        "memory": {"peak_rss_mb": peak_rss_mb(), "peak_rss_before_torch_mb": rss_before_torch},
    }
    validate_report(report, source="edge-bench report")
    return report


def run_pipeline(model: ModelFile, frame: BenchFrame, options: BenchOptions, provider: str, threads: int,
                 workdir: Path) -> dict[str, Any]:
    """The whole device pipeline on the field, stage by stage."""
    from benchmarks.edge_bench.delivery import delivery_stages, resolve_broker
    from benchmarks.edge_bench.diagnosis import bench_diagnoser, bench_sample
    from benchmarks.edge_bench.pipeline import Pipeline, analysis_stages, capture_stage, diagnosis_stage
    from runtime.analysis.analyzer import Analyzer
    from runtime.inference.session import SessionOptions
    from runtime.inference.model import SegmentationModel

    session_options = SessionOptions(providers=(provider,), intra_op_threads=threads, warmup=False)
    create_ms, segmenter = time_call(lambda: SegmentationModel.load(model.path, session_options))
    diagnoser, diagnoser_note = bench_diagnoser()
    analyzer = Analyzer(segmenter, diagnoser=diagnoser)
    # First inference on this field's tensor, before any warm-up.
    quality, scale = analyzer.check_quality(frame.image, frame.um_per_px)
    prepared = analyzer.preprocess(frame.image, scale)
    first_ms, _ = time_call(lambda: segmenter.predict(prepared))

    capture, close_camera = capture_stage(frame)
    sample = bench_sample()
    diagnosis = diagnosis_stage(analyzer, sample, diagnoser_note)
    broker = resolve_broker(options.mqtt, workdir)
    delivery, closers = delivery_stages(broker, workdir, segmenter.info(), sample)
    stages = [capture, *analysis_stages(analyzer, frame.um_per_px), diagnosis, *delivery]
    pipeline = Pipeline(stages, {"frame": frame.image})
    if close_camera:
        pipeline.closers.append(close_camera)
    pipeline.closers.extend(closers)
    if not isinstance(broker, str):
        pipeline.closers.append(broker.stop)
    try:
        e2e = pipeline.measure(warmup=options.warmup, runs=options.runs)
    finally:
        pipeline.close()
    # Cross-check: the device's own one-call analysis of the same field (quality .. diagnosis).
    analyze = measure(lambda: analyzer.analyze(frame.image, um_per_px=frame.um_per_px, sample=sample),
                      warmup=1, runs=options.runs)
    last = pipeline.state.get("last", {})
    counts = {k: int(v) for k, v in (last.get("counts") or {}).items()}
    counts["total"] = sum(counts.values())
    fields_per_s = rate_per_second(1.0, e2e.mean)
    return {
        "variant": model.variant,
        "provider": provider,
        "runs_on": segmenter.loaded.providers[0],
        "threads": threads,
        "session_create_ms": create_ms,
        "first_inference_ms": first_ms,
        "stages": [s.to_dict() for s in stages],
        "end_to_end_ms": e2e.to_dict(),
        "analyze_ms": analyze.to_dict(),
        "fields_per_s": fields_per_s,
        "cells_per_field": counts,
        "cells_per_min": None if fields_per_s is None else counts["total"] * fields_per_s * 60.0,
    }


def run_torch(options: BenchOptions, models: list[ModelFile], threads: list[int], inputs: dict[HW, Any],
              step: Callable[[str], None]) -> dict[str, Any]:
    """PyTorch eager latency at every thread count and size, or why it is not available."""
    from benchmarks.edge_bench.torch_baseline import BaselineUnavailable, load_torch_eager

    if not options.torch:
        return {"available": False, "note": "PyTorch baseline skipped (--no-torch)", "version": None, "points": []}
    reference = next((m for m in models if m.variant == "fp32"), models[0])
    try:
        eager = load_torch_eager(reference.path, reference.card, options.checkpoint)
    except BaselineUnavailable as exc:
        for _ in range(len(threads) * len(inputs)):
            step("PyTorch eager (not available)")
        return {"available": False, "note": f"PyTorch eager not available: {exc}", "version": None, "points": []}
    points = []
    for t in threads:
        eager.set_threads(t)
        for hw, tensor in inputs.items():
            stats = measure(lambda: eager.forward(tensor), warmup=options.warmup, runs=options.runs)
            points.append({"threads": t, "input_hw": list(hw), "latency_ms": stats.to_dict()})
            step(f"PyTorch eager {t}t {hw[0]}x{hw[1]}")
    note = f"PyTorch {eager.version} eager, inference_mode, CPU; weights: {eager.weights}"
    return {"available": True, "note": note, "version": eager.version, "points": points}


def progress_to_stderr(label: str) -> None:
    print(label, file=sys.stderr, flush=True)
