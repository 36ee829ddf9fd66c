"""Model-only inference sweeps: variant (fp32/int8) x execution provider x threads x input size.

Every point reports session-creation and first-inference time, latency statistics, and the
achieved MAC rate against this machine's matrix-multiply peak at the same thread count,
measured right beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from benchmarks.edge_bench.macs import MacCount
from benchmarks.edge_bench.models import ModelFile, open_session
from benchmarks.edge_bench.peak import Peak, ort_matmul_call, peak_from_samples
from benchmarks.edge_bench.timing import Stats, measure_each, ratio, summarize, time_call

HW = tuple[int, int]


@dataclass
class SweepPoint:
    """One configuration's measurements."""

    variant: str
    provider: str
    runs_on: str
    threads: int
    input_hw: HW
    session_create_ms: float
    first_inference_ms: float
    stats: Stats
    macs: int | None = None
    peak: Peak | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gmacs_per_s(self) -> float | None:
        rate = ratio(self.macs, self.stats.p50)
        return None if rate is None else rate * 1000.0 / 1e9

    @property
    def efficiency(self) -> float | None:
        return ratio(self.gmacs_per_s, self.peak.gmacs_per_s if self.peak else None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "provider": self.provider,
            "runs_on": self.runs_on,
            "threads": self.threads,
            "input_hw": list(self.input_hw),
            "session_create_ms": self.session_create_ms,
            "first_inference_ms": self.first_inference_ms,
            "latency_ms": self.stats.to_dict(),
            "macs": self.macs,
            "gmacs_per_s": self.gmacs_per_s,
            "peak_kernel": self.peak.kernel if self.peak else None,
            "peak_gmacs_per_s": self.peak.gmacs_per_s if self.peak else None,
            "efficiency": self.efficiency,
        }


def model_input(frame_bgr: np.ndarray, hw: HW, card: Any) -> np.ndarray:
    """The benchmark frame resized to `hw` and normalised by the one preprocessing (1x3xHxW)."""
    import cv2

    from runtime.inference.preprocess import PreprocessParams, normalize

    params = card.preprocess or PreprocessParams()
    resized = cv2.resize(frame_bgr, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    return normalize(resized, params)[None]


@dataclass(frozen=True)
class SweepTiming:
    """How each configuration is timed: warm-up and measured runs, and the matmul peak's size."""

    warmup: int
    runs: int
    peak_size: int


def run_sweep(
    models: Sequence[ModelFile],
    providers: Sequence[str],
    threads_list: Sequence[int],
    inputs: dict[HW, np.ndarray],
    timing: SweepTiming,
    macs: dict[tuple[str, HW], MacCount],
    on_point: Callable[[SweepPoint], None] = lambda point: None,
) -> tuple[list[SweepPoint], list[Peak]]:
    """Measure every configuration.

    Within one provider, thread count and size, the model variants run on the same input and (on
    the CPU provider) the fp32 and int8 matmul peak kernels at the same thread count are measured
    right after them; each model's efficiency is its MAC rate over the peak measured alongside it.
    """
    warmup, runs, peak_size = timing.warmup, timing.runs, timing.peak_size
    points: list[SweepPoint] = []
    peaks: list[Peak] = []
    for provider in providers:
        for threads in threads_list:
            sessions = {model.variant: (model, *open_session(model, provider, threads)) for model in models}
            kernels = {}
            if provider == "CPUExecutionProvider":
                kernels = {f"peak-{dtype}": ort_matmul_call(dtype, threads, peak_size) for dtype in ("fp32", "int8")}
            peak_samples: dict[str, list[float]] = {name: [] for name in kernels}
            pending: list[SweepPoint] = []
            for hw, tensor in inputs.items():
                calls = {}
                first = {}
                for variant, (model, _, loaded) in sessions.items():
                    feeds = {model.input_name: tensor}
                    calls[variant] = (lambda s=loaded.session, f=feeds: s.run(None, f))
                    first[variant], _ = time_call(calls[variant])
                calls.update(kernels)
                samples = measure_each(calls, warmup=warmup, runs=runs)
                for name in kernels:
                    peak_samples[name].extend(samples[name])
                for variant, (model, create_ms, loaded) in sessions.items():
                    count = macs.get((variant, hw))
                    pending.append(SweepPoint(
                        variant=variant,
                        provider=provider,
                        runs_on=loaded.providers[0] if loaded.providers else provider,
                        threads=threads,
                        input_hw=hw,
                        session_create_ms=create_ms,
                        first_inference_ms=first[variant],
                        stats=summarize(samples[variant]),
                        macs=count.total if count else None,
                    ))
            measured = {name[len("peak-"):]: peak_from_samples(name[len("peak-"):], threads, peak_size, values)
                        for name, values in peak_samples.items()}
            peaks.extend(measured.values())
            for point in pending:
                if point.runs_on == "CPUExecutionProvider":
                    point.peak = measured.get(point.variant)
                points.append(point)
                on_point(point)
            del sessions, kernels
    return points, peaks
