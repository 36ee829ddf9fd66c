"""Peak memory of the device's own process: one pipeline of the headline model, alone, in a fresh
Python process.

The benchmark process's own peak counts everything it holds at once: the headline pipelines
(two to four, each with its own ONNX Runtime session), the fp32 model, the sweep's sessions and
PyTorch. A device runs one analyser on one model. So the headline model's pipeline (capture,
quality, segmentation, cells and counts, diagnosis, outbox, publish: field_runs.build_pipeline)
runs in a child started with `python -m benchmarks.edge_bench.device_process`, which imports
only what that pipeline needs and prints its peak resident set at its end.

The child's peak is read as `VmHWM` (the high-water mark of its own address space, which starts
afresh at exec), not `getrusage(RUSAGE_SELF).ru_maxrss`: Linux carries the maximum of the
process that forked the child across exec, so a child of a 300 MB benchmark would report at
least 300 MB whatever it ran. Elsewhere ru_maxrss is the only figure (report.peak_rss_mb).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: The child prints its answer as the last stdout line after this marker.
MARKER = "device-process-result "


@dataclass(frozen=True)
class DeviceRunSpec:
    """What the child runs: one model on the field's file, with or without its calibration."""

    model_path: str
    variant: str
    frame_file: str
    um_per_px: float | None
    provider: str
    threads: int
    warmup: int
    runs: int
    mqtt: str


class DeviceProcessError(RuntimeError):
    """The child process failed or did not print its answer."""


def measure_device_process(spec: DeviceRunSpec, timeout_s: float = 600.0) -> dict[str, Any]:
    """Run `spec` in a fresh Python process; its peak RSS, end-to-end summary and what it loaded."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    try:
        done = subprocess.run([sys.executable, "-m", "benchmarks.edge_bench.device_process"],
                              input=json.dumps(asdict(spec)), capture_output=True, text=True, env=env,
                              timeout=timeout_s, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        raise DeviceProcessError(f"the device process did not finish within {timeout_s:.0f} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceProcessError(f"the device process failed (exit {done.returncode}): {tail}")
    return json.loads(lines[-1][len(MARKER):])


def run_in_this_process(spec: DeviceRunSpec) -> dict[str, Any]:
    """The child's work: build the pipeline as edge-bench does, run it, report this process's peak."""
    from benchmarks.edge_bench.field_runs import PipelineSpec, RunSetup, build_pipeline
    from benchmarks.edge_bench.frames import load_frame
    from benchmarks.edge_bench.models import describe
    from benchmarks.edge_bench.report import peak_rss_mb

    calibrated = spec.um_per_px is not None
    with tempfile.TemporaryDirectory(prefix="edge-bench-device-") as tmp:
        workdir = Path(tmp)
        frame = load_frame(workdir, Path(spec.frame_file), spec.um_per_px)
        setup = RunSetup(spec.provider, spec.threads, spec.warmup, spec.runs, spec.mqtt, workdir)
        built = build_pipeline(PipelineSpec(describe(spec.variant, Path(spec.model_path)), "new", calibrated),
                               frame, setup)
        try:
            e2e = built.pipeline.measure(warmup=spec.warmup, runs=spec.runs)
        finally:
            built.pipeline.close()
        unavailable = [s.name for s in built.pipeline.stages if not s.available]
    return {
        "calibrated": calibrated,
        "peak_rss_mb": peak_rss_mb(),
        "end_to_end_ms": e2e.to_dict(),
        "stages_not_available": unavailable,
        "torch_imported": "torch" in sys.modules,
        "pid": os.getpid(),
    }


def main() -> None:
    spec = DeviceRunSpec(**json.loads(sys.stdin.read()))
    print(MARKER + json.dumps(run_in_this_process(spec)), flush=True)


if __name__ == "__main__":
    main()
