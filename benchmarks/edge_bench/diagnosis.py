"""The sample the benchmark field belongs to, and the device's diagnoser when the runtime has one."""

from __future__ import annotations

import importlib
from typing import Any

# Lab values of a typical screening sample (what the guideline rules read), in the units of the keys.
BENCH_LABS = {"fpg_mg_dl": 126.0, "hba1c_pct": 6.1}

# Where the runtime builds the analyser's Diagnoser, in order of preference: "module:function".
DIAGNOSER_FACTORIES = ("runtime.decision:make_diagnoser", "runtime.device:make_diagnoser")


def bench_sample() -> Any:
    from runtime.sample_context import SampleContext, SampleField

    return SampleField(SampleContext(sample_id="bench-0001", labs=dict(BENCH_LABS)), 0)


def bench_diagnoser() -> tuple[Any | None, str]:
    """(the runtime's Diagnoser with its defaults, note) or (None, why not)."""
    for target in DIAGNOSER_FACTORIES:
        module_name, attr = target.split(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            continue
        return factory(), f"{target}()"
    return None, "this runtime provides no diagnoser factory (" + ", ".join(DIAGNOSER_FACTORIES) + ")"
