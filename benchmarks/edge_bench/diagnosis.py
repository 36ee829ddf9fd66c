"""The sample the benchmark field belongs to, and the device's own diagnoser with its defaults."""

from __future__ import annotations

from typing import Any

from benchmarks.edge_bench.pipeline import module_missing

# A screening sample with the lab values the guideline rules and the network read (units in the keys).
BENCH_LABS = {"age": 52.0, "sex": "F", "bmi": 31.0, "fpg_mg_dl": 126.0, "hba1c_pct": 6.1}


def bench_sample() -> Any:
    from runtime.contracts.sample import SampleContext, SampleField

    return SampleField(SampleContext(sample_id="bench-0001", labs=dict(BENCH_LABS)), 0)


def bench_diagnoser() -> tuple[Any | None, str]:
    """(the device's diagnoser built from the default config, what it runs) or (None, why not)."""
    missing = module_missing("runtime.diagnosis.decision") or module_missing("runtime.diagnosis")
    if missing:
        return None, missing
    from runtime.contracts.config import DiagnosisConfig
    from runtime.diagnosis.decision import GuidelineDiagnoser

    diagnoser = GuidelineDiagnoser.from_config(DiagnosisConfig())
    if diagnoser is None:
        return None, "diagnosis disabled in the default config"
    network = "+ diagnosis network (ONNX)" if diagnoser.network is not None else "(no diagnosis network shipped)"
    return diagnoser, f"{diagnoser.guideline.upper()} guideline rules {network} on the sample's labs and the counts"
