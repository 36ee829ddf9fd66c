"""Timing and statistics: the one copy of percentiles, the warm-up + N runs loop and ratios.

Every figure edge-bench and the model-latency script print goes through these helpers, so a
p50 means the same thing everywhere (linear interpolation between closest ranks, as numpy's
default `percentile`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct`-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


@dataclass(frozen=True)
class Stats:
    """Summary of repeated timings, in milliseconds."""

    n: int
    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    min: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Stats":
        return cls(**{k: data[k] for k in ("n", "p50", "p90", "p95", "p99", "mean", "min", "max")})


def summarize(samples_ms: Sequence[float]) -> Stats:
    """p50/p90/p95/p99/mean/min/max of timings in milliseconds."""
    if not samples_ms:
        raise ValueError("no timings to summarize")
    return Stats(
        n=len(samples_ms),
        p50=percentile(samples_ms, 50),
        p90=percentile(samples_ms, 90),
        p95=percentile(samples_ms, 95),
        p99=percentile(samples_ms, 99),
        mean=sum(samples_ms) / len(samples_ms),
        min=min(samples_ms),
        max=max(samples_ms),
    )


def time_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run `fn` once; return (elapsed milliseconds, its result)."""
    start = time.perf_counter_ns()
    result = fn()
    return (time.perf_counter_ns() - start) / 1e6, result


def timed_runs(fn: Callable[[], Any], *, warmup: int, runs: int) -> list[float]:
    """Call `fn` `warmup` times untimed, then `runs` times timed; the timings in milliseconds."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    for _ in range(max(0, warmup)):
        fn()
    return [time_call(fn)[0] for _ in range(runs)]


def measure(fn: Callable[[], Any], *, warmup: int, runs: int) -> Stats:
    """`timed_runs`, summarized."""
    return summarize(timed_runs(fn, warmup=warmup, runs=runs))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or not denominator > 0:
        return None
    return numerator / denominator


def rate_per_second(count: float, ms: float | None) -> float | None:
    """How many `count`s per second at `ms` milliseconds each (None for a missing/zero time)."""
    per_ms = ratio(count, ms)
    return None if per_ms is None else per_ms * 1000.0


def measure_each(fns: dict[str, Callable[[], Any]], *, warmup: int, runs: int) -> dict[str, list[float]]:
    """Timings (ms) of several callables, each measured on its own (warm-up + runs), one after another.

    Not interleaved run by run on purpose: PyTorch's thread pool (and an ONNX Runtime session
    without `session.force_spinning_stop`, which the project's sessions set) spin-waits after a
    run, so alternating two models made each one compete with the other's spinning threads (on 2
    cores this inflated both by ~1.5x). Measuring them back to back, as the device runs one model,
    keeps them comparable and close in time.
    """
    return {name: timed_runs(fn, warmup=warmup, runs=runs) for name, fn in fns.items()}
