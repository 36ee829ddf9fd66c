"""edge-bench end to end on a real exported model: --quick --json validates against the schema,
every stage is either measured or says why not, ratios match the figures they come from,
and compare/markdown/errors behave."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.edge_bench.cli import cli
from benchmarks.edge_bench.delivery import mosquitto_binary
from benchmarks.edge_bench.pipeline import STAGE_NAMES
from benchmarks.edge_bench.render import report_tables, to_markdown
from benchmarks.edge_bench.report import load_report, schema_errors
from runtime.contracts.errors import SchemaError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    """A genuine trained, exported and quantized model with cards (the export pipeline's own helper)."""
    pytest.importorskip("torch")
    from _edge_bench_model import tiny_model_files

    return tiny_model_files()


@pytest.fixture(scope="session")
def quick_report(tiny_models, tmp_path_factory) -> tuple[dict, Path, str]:
    from click.testing import CliRunner

    saved = tmp_path_factory.mktemp("reports") / "a.json"
    args = ["--quick", "--json", "--field", "synthetic", "--runs", "3", "--threads", "1,2", "--resolutions", "field,64",
            "--fp32", str(tiny_models["fp32"]), "--int8", str(tiny_models["int8"]),
            "--checkpoint", str(tiny_models["checkpoint"]), "-o", str(saved)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), saved, result.stderr


def test_quick_json_validates_against_the_schema(quick_report):
    report, saved, progress = quick_report
    assert schema_errors(report) == []
    assert load_report(saved) == report  # the -o copy is the same, valid report
    assert "[1/" in progress  # progress went to stderr, not into the JSON


def test_pipeline_measures_every_stage_or_says_why(quick_report):
    report, _, _ = quick_report
    # the headline variant with and without the field's calibration, then fp32 with it
    assert [(p["variant"], p["calibrated"]) for p in report["pipelines"]] == [("int8", True), ("int8", False),
                                                                            ("fp32", True)]
    for pipeline in report["pipelines"]:
        stages = {s["name"]: s for s in pipeline["stages"]}
        assert list(stages) == list(STAGE_NAMES)
        for name in ("capture", "quality", "preprocess", "inference", "postprocess", "diagnosis", "outbox"):
            assert stages[name]["available"], stages[name]["note"]
            assert stages[name]["latency_ms"]["n"] == 3
        publish = stages["publish"]
        assert publish["available"] == (mosquitto_binary() is not None), publish["note"]
        if not publish["available"]:
            assert publish["latency_ms"] is None and "mosquitto" in publish["note"]
        measured = sum(s["latency_ms"]["mean"] for s in pipeline["stages"] if s["available"])
        e2e = pipeline["end_to_end_ms"]
        assert e2e["mean"] >= measured  # the whole run contains its stages
        assert pipeline["fields_per_s"] == pytest.approx(1000.0 / e2e["mean"])
        total = pipeline["cells_per_field"]["total"]
        assert pipeline["cells_per_min"] == pytest.approx(total * pipeline["fields_per_s"] * 60.0)


def test_sweep_macs_and_ratios_are_consistent(quick_report):
    report, _, _ = quick_report
    field_hw = report["settings"]["frame"]["network_hw"]
    assert report["settings"]["resolutions"] == [field_hw, [64, 64]]
    macs = {(m["variant"], tuple(c["input_shape"][2:])): c["total"] for m in report["models"] for c in m["macs"]}
    field = tuple(field_hw)
    assert macs[("fp32", field)] == macs[("int8", field)] > 0  # quantization does not change the arithmetic
    # a fully convolutional net's MACs scale exactly with the pixel count (sides are multiples of its stride)
    assert macs[("fp32", (64, 64))] * field[0] * field[1] == macs[("fp32", field)] * 64 * 64
    sweep = {(p["variant"], p["threads"], tuple(p["input_hw"])): p for p in report["sweep"]}
    assert len(sweep) == len(report["sweep"]) == 2 * 2 * 2  # variants x threads x sizes
    threads = report["settings"]["threads"][-1]
    fp32, int8 = sweep[("fp32", threads, field)], sweep[("int8", threads, field)]
    macs = {"fp32": macs[("fp32", field)], "int8": macs[("int8", field)]}
    ratios = report["ratios"]
    assert ratios["int8_over_fp32"] == pytest.approx(int8["latency_ms"]["p50"] / fp32["latency_ms"]["p50"])
    assert fp32["gmacs_per_s"] == pytest.approx(macs["fp32"] / (fp32["latency_ms"]["p50"] / 1000.0) / 1e9)
    peak = next(p for p in report["peaks"] if p["kernel"] == "ort-matmulinteger" and p["threads"] == threads)
    assert ratios["efficiency_int8"] == pytest.approx(int8["gmacs_per_s"] / peak["gmacs_per_s"])
    torch_point = next(p for p in report["torch"]["points"] if p["threads"] == threads and p["input_hw"] == field_hw)
    assert report["torch"]["available"] and "checkpoint best.pt" in report["torch"]["note"]
    assert ratios["ort_fp32_over_torch"] == pytest.approx(fp32["latency_ms"]["p50"] / torch_point["latency_ms"]["p50"])
    assert report["memory"]["peak_rss_mb"] >= report["memory"]["peak_rss_before_torch_mb"] > 0
    by_threads = {r["basis"]["threads"]: r for r in ratios["by_threads"]}
    assert sorted(by_threads) == report["settings"]["threads"]
    one = by_threads[1]
    assert one["int8_over_fp32"] == pytest.approx(sweep[("int8", 1, field)]["latency_ms"]["p50"]
                                                  / sweep[("fp32", 1, field)]["latency_ms"]["p50"])


def test_operator_profile_accounts_for_the_time(quick_report, tiny_models):
    report, _, _ = quick_report
    profiles = {p["variant"]: p for p in report["op_profile"]}
    assert set(profiles) == {"fp32", "int8"}
    for profile in profiles.values():
        assert sum(op["share"] for op in profile["ops"]) == pytest.approx(1.0)
    int8_ops = {op["op"]: op for op in profiles["int8"]["ops"]}
    # every Conv runs as an int8 kernel but the image's own, which the export leaves in float
    from runtime.contracts.modelcard import load_card

    on_image = (load_card(tiny_models["int8"]).quantization.get("left_in_float") or {}).get("input_convolutions", [])
    assert "QLinearConv" in int8_ops and len(on_image) == 1
    assert int8_ops["Conv"]["nodes"] == len(on_image)


def test_schema_rejects_broken_reports(quick_report):
    report, _, _ = quick_report
    negative = copy.deepcopy(report)
    negative["sweep"][0]["latency_ms"]["p50"] = -1.0
    assert any(e.startswith("sweep/0/latency_ms/p50") for e in schema_errors(negative))
    missing = copy.deepcopy(report)
    del missing["ratios"]
    assert any("ratios" in e for e in schema_errors(missing))
    unknown_stage = copy.deepcopy(report)
    unknown_stage["pipelines"][0]["stages"][0]["name"] = "teleport"
    assert schema_errors(unknown_stage)


def test_markdown_and_compare(quick_report, tmp_path, cli_runner):
    report, saved, _ = quick_report
    markdown = to_markdown(report_tables(report))
    assert "| stage | p50 | p90 | p99 | mean | share | what |" in markdown
    other = tmp_path / "b.json"
    slower = copy.deepcopy(report)
    slower["pipelines"][0]["end_to_end_ms"]["p50"] *= 2
    other.write_text(json.dumps(slower))
    result = cli_runner.invoke(cli, ["compare", str(saved), str(other)])
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if l.startswith("int8 calibrated end-to-end p50 ms"))
    assert line.split()[-1] == "2.000"


def test_compare_refuses_an_invalid_report_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "edge-bench/1"}))
    proc = subprocess.run([sys.executable, "-c", "from smearscope.cli.edge_bench import main; main()", "compare",
                           str(bad), str(bad)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 1  # 1: bad data (2 is for usage, config and model files)
    assert proc.stderr.strip().count("\n") == 0 and "bad.json: not a valid edge-bench report" in proc.stderr
    with pytest.raises(SchemaError, match="does not exist"):
        load_report(tmp_path / "missing.json")


def test_missing_models_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from smearscope.cli.edge_bench import main; main()", "--quick",
                           "--model-dir", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2
    assert "no segmentation model found" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_resolution_is_a_usage_error(cli_runner):
    result = cli_runner.invoke(cli, ["--resolutions", "100x100"])
    assert result.exit_code == 2 and "multiples of 16" in result.output


def test_help(cli_runner):
    for args in (["--help"], ["compare", "--help"]):
        result = cli_runner.invoke(cli, args)
        assert result.exit_code == 0 and "Usage:" in result.output


BLOCK_WORKSTATION_PACKAGES = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnx', 'onnxsim'):
            raise ImportError(f'{name} is not installed on this device')
sys.meta_path.insert(0, Block())
from smearscope.cli.edge_bench import main
main()
"""


def test_runs_on_a_device_install_without_torch_and_onnx(tiny_models, tmp_path):
    out = tmp_path / "device.json"
    args = ["--quick", "--field", "synthetic", "--runs", "2", "--mqtt", "none", "--fp32", str(tiny_models["fp32"]),
            "--int8", str(tiny_models["int8"]), "-o", str(out)]
    proc = subprocess.run([sys.executable, "-c", BLOCK_WORKSTATION_PACKAGES, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = load_report(out)
    assert report["torch"]["available"] is False and "not installed" in report["torch"]["note"]
    assert report["ratios"]["ort_fp32_over_torch"] is None
    assert report["ratios"]["int8_over_fp32"] is not None
    assert report["models"][0]["macs"][0]["total"] > 0  # counted without the onnx package
    publish = next(s for s in report["pipelines"][0]["stages"] if s["name"] == "publish")
    assert not publish["available"] and "--mqtt none" in publish["note"]
