"""The model-latency script: int8 ONNX, fp32 ONNX and PyTorch eager p50 and their ratios, one run."""

from __future__ import annotations

import json
import re

import pytest

from benchmarks.model_latency import main


@pytest.fixture(scope="module")
def tiny_models():
    pytest.importorskip("torch")
    from _edge_bench_model import tiny_model_files

    return tiny_model_files()


def _args(models, *extra: str) -> list[str]:
    return ["--fp32", str(models["fp32"]), "--int8", str(models["int8"]), "--checkpoint", str(models["checkpoint"]),
            "--runs", "3", "--warmup", "1", "--threads", "1", *extra]


def test_prints_three_p50s_and_ratios_consistent_with_them(cli_runner, tiny_models):
    result = cli_runner.invoke(main, _args(tiny_models), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    p50 = {name: float(value) for name, value in re.findall(r"^\s+(int8 ONNX|fp32 ONNX|PyTorch eager)\s+p50\s+([\d.]+) ms",
                                                           result.output, re.M)}
    assert set(p50) == {"int8 ONNX", "fp32 ONNX", "PyTorch eager"}
    ratios = dict(re.findall(r"^\s+(int8/fp32|int8/PyTorch|fp32/PyTorch)\s+([\d.]+)", result.output, re.M))
    # printed with 2 and 3 decimals: compare at that precision
    assert float(ratios["int8/fp32"]) == pytest.approx(p50["int8 ONNX"] / p50["fp32 ONNX"], abs=2e-3, rel=1e-2)
    assert float(ratios["fp32/PyTorch"]) == pytest.approx(p50["fp32 ONNX"] / p50["PyTorch eager"], abs=2e-3, rel=1e-2)
    assert "weights: checkpoint best.pt" in result.output


def test_json_output_has_the_same_figures(cli_runner, tiny_models):
    result = cli_runner.invoke(main, _args(tiny_models, "--json", "--size", "64"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["input_shape"] == [1, 3, 64, 64]
    lat = data["latency_ms"]
    assert {k: v["n"] for k, v in lat.items()} == {"int8 ONNX": 3, "fp32 ONNX": 3, "PyTorch eager": 3}
    assert data["p50_ratios"]["int8/PyTorch"] == pytest.approx(lat["int8 ONNX"]["p50"] / lat["PyTorch eager"]["p50"])


def test_needs_both_variants(cli_runner, tiny_models, tmp_path):
    result = cli_runner.invoke(main, ["--int8", str(tiny_models["int8"]), "--model-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "missing fp32" in str(result.exception)
