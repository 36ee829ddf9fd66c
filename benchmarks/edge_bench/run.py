"""One edge-bench run: machine, peaks, MACs, the device pipeline (with a baseline model set when
asked), the sweep and the PyTorch baseline, all in one process so every ratio compares figures
measured minutes apart."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from benchmarks.edge_bench.frames import BenchFrame, load_frame
from benchmarks.edge_bench.machine import load_average, machine_info
from benchmarks.edge_bench.models import ModelFile, compute_providers, find_models
from benchmarks.edge_bench.report import SCHEMA_ID, headline_ratios, peak_rss_mb, validate_report
from benchmarks.edge_bench.timing import measure

if TYPE_CHECKING:
    from benchmarks.edge_bench.field_runs import RunSetup

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
    field_kind: str = "camera"  # with no image: camera (1280x960 from bundled real frames) or synthetic
    baseline_dir: Path | None = None
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


def plan_steps(options: BenchOptions, models: list[ModelFile], groups: list[list[Any]], providers: list[str],
               threads: list[int], sizes: list[HW]) -> int:
    peaks = 1
    macs = len(models) * len(sizes) + (1 if options.baseline_dir else 0)
    pipelines = sum(len(group) for group in groups)
    sweep = len(models) * len(providers) * len(threads) * len(sizes)
    profiles = len(models)
    torch_points = len(threads) * len(sizes) if options.torch else 0
    device_processes = len(groups[0]) // (2 if options.baseline_dir else 1)
    return peaks + macs + pipelines + device_processes + sweep + profiles + torch_points


def baseline_model(options: BenchOptions, variant: str) -> ModelFile | None:
    """The baseline set's model of the headline variant (None without --baseline-models)."""
    if options.baseline_dir is None:
        return None
    found = {m.variant: m for m in find_models(options.baseline_dir, None, None)}
    if variant not in found:
        from runtime.contracts.errors import ModelError

        raise ModelError(f"{options.baseline_dir}: no {variant} model to compare with "
                         f"(the new set's headline is its {variant} model)")
    return found[variant]


def check_field_calibration(frame: BenchFrame, options: BenchOptions, models: list[ModelFile]) -> None:
    """Refuse a calibration outside any model card's scale range before measuring anything: the
    model would run at a clipped scale, which is not the pipeline the device runs."""
    from runtime.contracts.plausible import check_calibration

    if frame.um_per_px is None:
        return
    source = "--um-per-px" if options.um_per_px is not None else f"{frame.kind} field calibration"
    for model in models:
        check_calibration(frame.um_per_px, model.card.preprocess, source=source)


def run_benchmark(options: BenchOptions, progress: Progress = lambda label: None) -> dict[str, Any]:
    """Measure everything and return a validated edge-bench report."""
    from benchmarks.edge_bench.field_runs import RunSetup, headline_model, plan_groups, run_group
    from benchmarks.edge_bench.headline import HeadlineBasis, HeadlineConditions, headline
    from benchmarks.edge_bench.macs import count_macs
    from benchmarks.edge_bench.peak import numpy_gemm_peak
    from benchmarks.edge_bench.pipeline import interleave_block
    from benchmarks.edge_bench.profile import op_times, profile_events
    from benchmarks.edge_bench.sweep import SweepTiming, model_input, run_sweep

    machine = machine_info()
    models = find_models(options.model_dir, options.fp32, options.int8)
    main_model = headline_model(models)
    baseline = baseline_model(options, main_model.variant)
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
        frame = load_frame(workdir, options.image, options.um_per_px, options.field_kind)
        check_field_calibration(frame, options, models + ([baseline] if baseline else []))
        field_hw = field_network_hw(frame, main_model)
        sizes: list[HW] = []
        for size in options.resolutions:
            hw = field_hw if size is None else tuple(size)
            if hw not in sizes:
                sizes.append(hw)  # type: ignore[arg-type]
        groups = plan_groups(models, baseline, frame.um_per_px is not None)

        total = plan_steps(options, models, groups, providers, threads, sizes)
        done = [0]

        def step(label: str) -> None:
            done[0] += 1
            progress(f"[{done[0]}/{total}] {label}")

        # 1. numpy's BLAS as a reference (the ORT peaks are measured inside the sweep)
        peaks = [numpy_gemm_peak(options.peak_size)]
        step("numpy GEMM peak")

        # 2. MACs of every model at every size (the baseline's at its own field size)
        macs = {}
        for model in models:
            for hw in sizes:
                macs[(model.variant, hw)] = count_macs(model.path, *hw)
                step(f"MACs {model.variant} {hw[0]}x{hw[1]}")
        baseline_macs = []
        if baseline is not None:
            baseline_hw = field_network_hw(frame, baseline)
            baseline_macs = [count_macs(baseline.path, *baseline_hw).to_dict()]
            step(f"MACs baseline {baseline.variant} {baseline_hw[0]}x{baseline_hw[1]}")

        # 3. the device pipeline: the headline group (calibrated and uncalibrated, the baseline's
        #    beside them, all taking turns), then the other variants
        setup = RunSetup(providers[0], main_threads, options.warmup, options.runs, options.mqtt, workdir)
        #    and the headline model's pipeline alone in a fresh process (the device's memory)
        pipelines = []
        load_before = load_average()
        conditions, device = None, None
        for n, group in enumerate(groups, 1):
            pipelines.extend(run_group(group, frame, setup))
            for spec in group:
                step(f"pipeline {spec.label}")
            if n == 1:
                conditions = HeadlineConditions(load_before, load_average(), peak_rss_mb(), len(group),
                                                interleave_block(options.runs) if len(group) > 1 else None)
                device = device_figures(options, main_model, frame, setup, step)

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
    model_dicts = [
        {**m.to_dict(), "model_set": "new", "macs": [macs[(m.variant, hw)].to_dict() for hw in sizes]} for m in models
    ]
    if baseline is not None:
        model_dicts.append({**baseline.to_dict(), "model_set": "baseline", "macs": baseline_macs})
    if conditions is None or device is None:
        raise RuntimeError("the headline pipelines did not run")
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
            "frame": {"source": frame.source, "kind": frame.kind, "tiles": list(frame.tiles),
                      "frame_hw": list(frame.hw), "network_hw": list(field_hw), "um_per_px": frame.um_per_px},
            "baseline_models": None if options.baseline_dir is None else str(options.baseline_dir),
        },
        "machine": machine,
        "peaks": [p.to_dict() for p in peaks + sweep_peaks],
        "models": model_dicts,
        "pipelines": pipelines,
        "headline": headline(pipelines, sweep_dicts, model_dicts,
                             HeadlineBasis(main_model.variant, providers[0], main_threads, list(field_hw)), conditions,
                             device),
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


def device_figures(options: BenchOptions, model: ModelFile, frame: BenchFrame, setup: RunSetup,
                   step: Callable[[str], None]) -> dict[str, Any]:
    """The headline model's pipeline alone in a fresh process, once per calibration mode the
    headline has: each process's peak RSS, and the larger as the device's figure."""
    from benchmarks.edge_bench.device_process import DeviceRunSpec, measure_device_process

    modes = []
    for um_per_px in ([frame.um_per_px] if frame.um_per_px is not None else []) + [None]:
        spec = DeviceRunSpec(str(model.path.resolve()), model.variant, str(frame.file.resolve()), um_per_px,
                             setup.provider, setup.threads, options.warmup, options.runs, options.mqtt)
        modes.append(measure_device_process(spec))
        step(f"device process {model.variant} {'calibrated' if um_per_px is not None else 'uncalibrated'}")
    return {"peak_rss_mb": max(m["peak_rss_mb"] for m in modes), "runs": options.runs, "warmup": options.warmup,
            "modes": modes}


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
