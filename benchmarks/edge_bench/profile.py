"""ONNX Runtime's own profile of a model: every executed node with its operator, shapes and time.

Used twice: MAC counting (graph unoptimised, so every Conv of the file appears with its shapes)
and the operator-time breakdown (graph optimised as the device runs it, so the time goes where
it really goes: e.g. how much of an int8 model is spent re-quantising between float operators).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.contracts.errors import ModelError


def input_feeds(session: Any, height: int, width: int) -> dict[str, np.ndarray]:
    """Zero float32 inputs of batch 1 at height x width (channels from the model's declared shape)."""
    feeds = {}
    for inp in session.get_inputs():
        dims = list(inp.shape)
        if len(dims) != 4:
            raise ModelError(f"input {inp.name!r} has shape {dims}; edge-bench expects NCHW images")
        channels = dims[1] if isinstance(dims[1], int) else 3
        feeds[inp.name] = np.zeros((1, channels, height, width), dtype=np.float32)
    return feeds


def profile_events(
    model_path: str | Path, height: int, width: int, *, optimization: str, threads: int, runs: int
) -> tuple[list[int], list[dict[str, Any]]]:
    """(input shape, ORT profile events) of `runs` batch-1 inferences at height x width."""
    from runtime.inference.session import SessionOptions, create_session

    with tempfile.TemporaryDirectory(prefix="edge-bench-profile-") as tmp:
        options = SessionOptions(
            providers=("cpu",),
            intra_op_threads=threads,
            warmup=False,
            optimization=optimization,
            profile_prefix=os.path.join(tmp, "profile"),
        )
        session = create_session(model_path, options)
        feeds = input_feeds(session, height, width)
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    return list(next(iter(feeds.values())).shape), events


@dataclass(frozen=True)
class OpTime:
    op: str
    ms_per_run: float
    share: float
    nodes: int


def op_times(events: list[dict[str, Any]], runs: int, skip_first: bool = True) -> list[OpTime]:
    """Kernel time per operator type, averaged per run, largest first.

    With `skip_first`, the first run's events are dropped (allocation and kernel set-up).
    """
    node_events = [e for e in events if e.get("cat") == "Node" and "op_name" in (e.get("args") or {})
                   and str(e.get("name", "")).endswith("_kernel_time")]
    per_run = len(node_events) // runs if runs else 0
    if skip_first and runs > 1 and per_run:
        node_events, runs = node_events[per_run:], runs - 1
    totals: dict[str, float] = {}
    names: dict[str, set[str]] = {}
    for event in node_events:
        op = event["args"]["op_name"]
        totals[op] = totals.get(op, 0.0) + float(event.get("dur", 0)) / 1000.0
        names.setdefault(op, set()).add(str(event["name"]))
    grand = sum(totals.values()) or 1.0
    rows = [OpTime(op, ms / runs, ms / grand, len(names[op])) for op, ms in totals.items()]
    return sorted(rows, key=lambda r: r.ms_per_run, reverse=True)
