"""edge-bench arithmetic on known inputs: percentiles, summaries, ratios, MACs, efficiency, stage shares,
the turns two model sets take, and the headline's figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.edge_bench.headline import field_figures, over_baseline
from benchmarks.edge_bench.machine import cpu_flags, cpu_model
from benchmarks.edge_bench.macs import macs_from_profile, node_macs
from benchmarks.edge_bench.peak import Peak
from benchmarks.edge_bench.pipeline import Pipeline, Stage, interleave_block, measure_interleaved
from benchmarks.edge_bench.report import headline_ratios
from benchmarks.edge_bench.sweep import SweepPoint
from benchmarks.edge_bench.timing import Stats, measure, percentile, rate_per_second, ratio, summarize


def test_percentiles_of_one_to_ten():
    values = [float(v) for v in range(10, 0, -1)]  # unsorted on purpose
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 90) == pytest.approx(9.1)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 10.0


def test_percentile_matches_numpy_linear_definition():
    rng = np.random.default_rng(3)
    values = rng.lognormal(size=37).tolist()
    for pct in (1, 25, 50, 90, 99):
        assert percentile(values, pct) == pytest.approx(float(np.percentile(values, pct)))


def test_percentile_rejects_empty_and_out_of_range():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_known_values():
    stats = summarize([3.0, 1.0, 2.0, 4.0])
    assert stats == Stats(n=4, p50=2.5, p90=pytest.approx(3.7), p95=pytest.approx(3.85), p99=pytest.approx(3.97),
                          mean=2.5, min=1.0, max=4.0)
    assert summarize([7.0]) == Stats(n=1, p50=7.0, p90=7.0, p95=7.0, p99=7.0, mean=7.0, min=7.0, max=7.0)


def test_measure_runs_warmup_then_timed_calls():
    calls = []
    stats = measure(lambda: calls.append(1), warmup=2, runs=5)
    assert len(calls) == 7
    assert stats.n == 5
    assert 0 <= stats.min <= stats.p50 <= stats.p90 <= stats.p95 <= stats.p99 <= stats.max


def test_ratio_and_rate():
    assert ratio(2.0, 8.0) == 0.25
    assert ratio(None, 8.0) is None
    assert ratio(2.0, None) is None
    assert ratio(2.0, 0.0) is None
    assert rate_per_second(1.0, 250.0) == pytest.approx(4.0)
    assert rate_per_second(30.0, 500.0) == pytest.approx(60.0)
    assert rate_per_second(1.0, None) is None


def _stats(p50: float) -> Stats:
    return Stats(n=3, p50=p50, p90=p50, p95=p50, p99=p50, mean=p50, min=p50, max=p50)


def test_sweep_point_rate_and_efficiency():
    peak = Peak("ort-matmulinteger", "int8", 256, 2, p50_ms=1.0, gmacs_per_s=80.0)
    point = SweepPoint("int8", "CPUExecutionProvider", "CPUExecutionProvider", 2, (64, 64), 1.0, 1.0,
                       _stats(100.0), macs=2_000_000_000, peak=peak)
    assert point.gmacs_per_s == pytest.approx(20.0)  # 2 GMAC in 0.1 s
    assert point.efficiency == pytest.approx(0.25)
    unknown = SweepPoint("int8", "X", "X", 2, (64, 64), 1.0, 1.0, _stats(100.0))
    assert unknown.gmacs_per_s is None and unknown.efficiency is None


def test_headline_ratios_use_the_basis_configuration():
    def point(variant: str, threads: int, p50: float, eff: float) -> dict:
        return {"variant": variant, "provider": "CPUExecutionProvider", "threads": threads, "input_hw": [64, 64],
                "latency_ms": _stats(p50).to_dict(), "efficiency": eff}

    sweep = [point("fp32", 2, 40.0, 0.5), point("int8", 2, 10.0, 0.2), point("fp32", 1, 70.0, 0.6),
             point("int8", 1, 18.0, 0.3)]
    torch_points = [{"threads": 2, "input_hw": [64, 64], "latency_ms": _stats(80.0).to_dict()},
                    {"threads": 1, "input_hw": [64, 64], "latency_ms": _stats(150.0).to_dict()}]
    r = headline_ratios(sweep, torch_points, "CPUExecutionProvider", 2, [64, 64])
    assert r["int8_over_fp32"] == pytest.approx(0.25)
    assert r["ort_fp32_over_torch"] == pytest.approx(0.5)
    assert r["ort_int8_over_torch"] == pytest.approx(0.125)
    assert (r["efficiency_fp32"], r["efficiency_int8"]) == (0.5, 0.2)
    missing = headline_ratios(sweep, [], "CPUExecutionProvider", 2, [64, 64])
    assert missing["ort_fp32_over_torch"] is None and missing["int8_over_fp32"] == pytest.approx(0.25)


def test_node_macs_shape_arithmetic():
    # 3x3 conv, 3 -> 8 channels, 32x32 output: 32*32*8 outputs x 3*3*3 MACs each
    assert node_macs("Conv", [[1, 3, 32, 32], [8, 3, 3, 3]], [[1, 8, 32, 32]]) == 32 * 32 * 8 * 27
    # depthwise 3x3 over 16 channels: weight [16, 1, 3, 3]
    assert node_macs("Conv", [[1, 16, 8, 8], [16, 1, 3, 3]], [[1, 16, 8, 8]]) == 8 * 8 * 16 * 9
    # QLinearConv reads its weight as the 4th input
    assert node_macs("QLinearConv", [[1, 4, 4, 4], [], [], [2, 4, 1, 1]], [[1, 2, 4, 4]]) == 4 * 4 * 2 * 4
    assert node_macs("MatMul", [[5, 7], [7, 3]], [[5, 3]]) == 5 * 3 * 7
    assert node_macs("Gemm", [[5, 7], [3, 7]], [[5, 3]]) == 5 * 3 * 7
    assert node_macs("ConvTranspose", [[1, 4, 8, 8], [4, 2, 2, 2]], [[1, 2, 16, 16]]) == 4 * 8 * 8 * 2 * 2 * 2
    assert node_macs("Relu", [[1, 8, 32, 32]], [[1, 8, 32, 32]]) == 0


def test_macs_from_profile_events():
    events = [
        {"cat": "Session", "name": "model_run", "args": {}},
        {"cat": "Node", "name": "c_kernel_time",
         "args": {"op_name": "Conv", "input_type_shape": [{"float": [1, 3, 8, 8]}, {"float": [4, 3, 3, 3]}],
                  "output_type_shape": [{"float": [1, 4, 8, 8]}]}},
        {"cat": "Node", "name": "m_kernel_time",
         "args": {"op_name": "MatMul", "input_type_shape": [{"float": [2, 5]}, {"float": [5, 6]}],
                  "output_type_shape": [{"float": [2, 6]}]}},
        {"cat": "Node", "name": "r_kernel_time",
         "args": {"op_name": "Relu", "input_type_shape": [{"float": [1, 4, 8, 8]}],
                  "output_type_shape": [{"float": [1, 4, 8, 8]}]}},
    ]
    total, by_op = macs_from_profile(events)
    assert by_op == {"Conv": 8 * 8 * 4 * 27, "MatMul": 2 * 6 * 5}
    assert total == math.fsum(by_op.values())


def test_cpu_flags_and_model_from_cpuinfo():
    x86 = {"model name": "Intel(R) Xeon(R)", "flags": "fpu sse4_2 avx2 fma avx512f avx512_vnni amx_int8 hypervisor"}
    assert cpu_flags(x86) == ["sse4_2", "avx2", "fma", "avx512f", "avx512_vnni", "amx_int8"]
    assert cpu_model(x86) == "Intel(R) Xeon(R)"
    arm = {"processor": "0", "features": "fp asimd evtstrm aes crc32 asimddp i8mm", "cpu implementer": "0x41",
           "cpu part": "0xd0b"}
    assert cpu_flags(arm) == ["asimd", "asimddp", "i8mm"]
    assert cpu_model(arm) == "ARM implementer 0x41 part 0xd0b"


def _recording_pipeline(name: str, order: list[str]) -> Pipeline:
    return Pipeline([Stage("capture", "records its turn", lambda state: order.append(name))], {})


def test_interleaved_pipelines_take_turns_in_a_b_b_a_order():
    order: list[str] = []
    a, b = _recording_pipeline("A", order), _recording_pipeline("B", order)
    stats = measure_interleaved([a, b], warmup=1, runs=8)
    assert interleave_block(8) == 2
    assert "".join(order) == "AB" + "AABBBBAAAABBBBAA"  # warm-ups, then turns of 2, reversed each turn
    assert [s.n for s in stats] == [8, 8] and len(a.stages[0].samples_ms) == 8
    order.clear()
    measure_interleaved([a], warmup=0, runs=3)  # one pipeline: just its runs
    assert order == ["A"] * 3
    assert interleave_block(2) == 1 and interleave_block(15) == 4


def test_stage_shares_are_of_the_mean_end_to_end():
    pipeline = Pipeline([Stage("quality", "q", lambda s: None), Stage("diagnosis", "absent")], {})
    pipeline.stages[0].samples_ms.extend([1.0, 3.0])
    pipeline.end_to_end_ms.extend([4.0, 4.0])
    rows = pipeline.stage_dicts()
    assert rows[0]["share"] == pytest.approx(0.5) and rows[1]["share"] is None


def test_headline_figures_and_new_over_baseline():
    def entry(p50: float, post: float) -> dict:
        e2e = {**_stats(p50).to_dict(), "p95": p50 * 1.5}
        stages = [{"name": "inference", "latency_ms": _stats(p50 - post).to_dict(), "share": 0.25},
                  {"name": "postprocess", "latency_ms": _stats(post).to_dict(), "share": 0.75}]
        return {"end_to_end_ms": e2e, "stages": stages}

    new = {"calibrated": field_figures(entry(100.0, 75.0)), "uncalibrated": field_figures(entry(200.0, 150.0))}
    base = {"calibrated": field_figures(entry(200.0, 150.0)), "uncalibrated": None}
    assert new["calibrated"] == {"n": 3, "p50_ms": 100.0, "p95_ms": 150.0, "inference_p50_ms": 25.0,
                                 "postprocess_p50_ms": 75.0, "postprocess_share": 0.75}
    ratios = over_baseline(new, base)
    assert ratios == {"calibrated_p50": 0.5, "calibrated_p95": 0.5, "uncalibrated_p50": None, "uncalibrated_p95": None}
    assert over_baseline(new, None) is None


def test_a_pipeline_keeps_only_its_latest_run():
    pipeline = Pipeline([Stage("capture", "a fresh array per run", lambda s: s.update(frame=np.zeros(4)))],
                        {"shared": 1})
    for _ in range(3):
        pipeline.run_once(record=False)
    assert set(pipeline.state) == {"shared"}  # runs never write back into the shared state
    assert set(pipeline.last) == {"shared", "frame"}


@pytest.mark.parametrize("n", [1, 2, 3, 8, 11, 12])
def test_old_report_p95_from_p90_and_p99_only_where_exact(n):
    """edge-bench/1 stored p90 and p99: old_vs_new derives p95 from them where it is exact (at
    most 11 runs) and gives none beyond."""
    from benchmarks.old_vs_new import P95_FROM_P90_P99_MAX_RUNS, old_figures

    samples = [float(v) for v in np.random.default_rng(n).uniform(100, 900, n)]
    e2e = {k: v for k, v in summarize(samples).to_dict().items() if k != "p95"}
    figures = old_figures({"pipelines": [{"variant": "fp32", "end_to_end_ms": {}},
                                         {"variant": "int8", "end_to_end_ms": e2e}]})
    assert figures["p50_ms"] == percentile(samples, 50)
    if n <= P95_FROM_P90_P99_MAX_RUNS:
        assert figures["p95_ms"] == pytest.approx(percentile(samples, 95))
    else:
        assert figures["p95_ms"] is None
