"""Model-only inference sweeps: variant (fp32/int8) x execution provider x threads x input size.

Every point reports session-creation and first-inference time, latency statistics, and the
achieved MAC rate against this machine's matrix-multiply peak at the same thread count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from benchmarks.edge_bench.macs import MacCount
from benchmarks.edge_bench.models import ModelFile, open_session
from benchmarks.edge_bench.peak import Peak
from benchmarks.edge_bench.timing import Stats, measure_interleaved, ratio, time_call

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

    from runtime.preprocess import PreprocessParams, normalize

    params = card.preprocess or PreprocessParams()
    resized = cv2.resize(frame_bgr, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    return normalize(resized, params)[None]


def run_sweep(
    models: Sequence[ModelFile],
    providers: Sequence[str],
    threads_list: Sequence[int],
    inputs: dict[HW, np.ndarray],
    *,
    warmup: int,
    runs: int,
    macs: dict[tuple[str, HW], MacCount],
    peaks: dict[tuple[str, int], Peak],
    on_point: Callable[[SweepPoint], None] = lambda point: None,
) -> list[SweepPoint]:
    """Measure every configuration; the variants of one configuration run interleaved on the same tensor."""
    points = []
    for provider in providers:
        for threads in threads_list:
            sessions = {model.variant: (model, *open_session(model, provider, threads)) for model in models}
            for hw, tensor in inputs.items():
                calls = {}
                first = {}
                for variant, (model, _, loaded) in sessions.items():
                    feeds = {model.input_name: tensor}
                    calls[variant] = (lambda s=loaded.session, f=feeds: s.run(None, f))
                    first[variant], _ = time_call(calls[variant])
                stats = measure_interleaved(calls, warmup=warmup, runs=runs)
                for variant, (model, create_ms, loaded) in sessions.items():
                    runs_on = loaded.providers[0] if loaded.providers else provider
                    count = macs.get((variant, hw))
                    point = SweepPoint(
                        variant=variant,
                        provider=provider,
                        runs_on=runs_on,
                        threads=threads,
                        input_hw=hw,
                        session_create_ms=create_ms,
                        first_inference_ms=first[variant],
                        stats=stats[variant],
                        macs=count.total if count else None,
                        peak=peaks.get((variant, threads)) if runs_on == "CPUExecutionProvider" else None,
                    )
                    points.append(point)
                    on_point(point)
            del sessions
    return points
