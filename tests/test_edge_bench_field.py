"""edge-bench on its default field with the shipped version-3 int8 model and real ONNX Runtime:
the camera-size field, the headline (calibrated and uncalibrated end to end, post-processing's
share, MAC/s against the run's peak, memory, load), new vs baseline in one run, and the one-line
errors for a field too large and a calibration the model card cannot take."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.edge_bench.cli import cli
from benchmarks.edge_bench.device_process import DeviceRunSpec, measure_device_process
from benchmarks.edge_bench.frames import CAMERA_HW, load_frame
from benchmarks.edge_bench.render import report_tables, to_text
from benchmarks.edge_bench.report import load_report, peak_rss_mb, schema_errors
from runtime.capture.bundled import bundled_frames, bundled_um_per_px

REPO = Path(__file__).resolve().parent.parent
LITE = REPO / "models"  # the shipped lite network
V3 = REPO / "models" / "v3"
RUNS = 2


@pytest.fixture(scope="module")
def int8_only(tmp_path_factory) -> Path:
    """A model set holding only the lite int8 model (links to its files)."""
    folder = tmp_path_factory.mktemp("int8-set")
    for name in ("segmentation.int8.onnx", "segmentation.int8.json"):
        (folder / name).symlink_to(LITE / name)
    return folder


@pytest.fixture(scope="module")
def compare_report(int8_only, tmp_path_factory) -> tuple[dict, Path]:
    from click.testing import CliRunner

    saved = tmp_path_factory.mktemp("reports") / "field.json"
    args = ["--models", str(int8_only), "--baseline-models", str(V3), "--quick", "--runs", str(RUNS), "--warmup", "0",
            "--no-torch", "--mqtt", "none", "--json", "-o", str(saved)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), saved


def test_camera_field_is_four_bundled_frames_at_their_calibration(tmp_path):
    frame = load_frame(tmp_path, None, None)
    first_four = bundled_frames()[:4]
    assert frame.kind == "camera" and frame.hw == CAMERA_HW
    assert frame.um_per_px == bundled_um_per_px()
    assert frame.tiles == tuple(f.name for f in first_four)
    h, w = CAMERA_HW[0] // 2, CAMERA_HW[1] // 2
    quadrants = [frame.image[:h, :w], frame.image[:h, w:], frame.image[h:, :w], frame.image[h:, w:]]
    for quadrant, source in zip(quadrants, first_four):  # the stored JPEG q95 stays close to its tile
        assert np.abs(quadrant.astype(int) - source.load().astype(int)).mean() < 3.0
    assert frame.file.read_bytes()[:2] == b"\xff\xd8"  # what the capture stage decodes
    assert load_frame(tmp_path / "s", None, None, kind="synthetic").hw == (480, 640)


def test_report_validates_and_the_headline_comes_from_its_pipelines(compare_report):
    report, saved = compare_report
    assert schema_errors(report) == [] and load_report(saved) == report
    frame = report["settings"]["frame"]
    assert frame["kind"] == "camera" and frame["frame_hw"] == list(CAMERA_HW)
    h = report["headline"]
    assert h["variant"] == "int8" and h["input_hw"] == frame["network_hw"]
    pipelines = {(p["model_set"], p["calibrated"]): p for p in report["pipelines"]}
    assert set(pipelines) == {("new", True), ("new", False), ("baseline", True), ("baseline", False)}
    for mode, flag in (("calibrated", True), ("uncalibrated", False)):
        figures, pipeline = h["new"][mode], pipelines[("new", flag)]
        e2e = pipeline["end_to_end_ms"]
        assert (figures["n"], figures["p50_ms"], figures["p95_ms"]) == (RUNS, e2e["p50"], e2e["p95"])
        assert pipeline["um_per_px"] == (frame["um_per_px"] if flag else None)
        stages = {s["name"]: s for s in pipeline["stages"]}
        post = stages["postprocess"]
        assert figures["postprocess_p50_ms"] == post["latency_ms"]["p50"]
        assert figures["postprocess_share"] == post["share"] == pytest.approx(post["latency_ms"]["mean"] / e2e["mean"])
        assert 0 < post["share"] < 1
        assert sum(s["share"] for s in stages.values() if s["available"]) <= 1.0
    net = h["network"]
    assert net["peak_kernel"] == "ort-matmulinteger" and net["macs"] > 0
    assert net["of_peak"] == pytest.approx(net["gmacs_per_s"] / net["peak_gmacs_per_s"])
    assert net["gmacs_per_s"] == pytest.approx(net["macs"] / (net["p50_ms"] / 1000.0) / 1e9)
    assert h["peak_rss_mb"] > 0 and len(h["load_average_before"]) == len(h["load_average_after"]) == 3
    profile = report["op_profile"][0]
    assert profile["input_hw"] == h["input_hw"] and "QLinearConv" in {op["op"] for op in profile["ops"]}


def test_compare_mode_reports_both_model_sets_and_their_ratio(compare_report):
    report, _ = compare_report
    h = report["headline"]
    assert h["new"]["model"]["path"].endswith("segmentation.int8.onnx")
    assert h["baseline"]["model"]["path"] == str(V3 / "segmentation.int8.onnx")
    assert h["new"]["model"]["sha256"] != h["baseline"]["model"]["sha256"]  # lite against version 3
    # calibrated and uncalibrated, new and baseline: four pipelines taking turns of one run each
    assert h["pipelines"] == 4 and h["runs_per_turn"] == 1 and all(p["interleaved"] for p in report["pipelines"])
    for mode in ("calibrated", "uncalibrated"):
        assert h["new_over_baseline"][f"{mode}_p50"] == pytest.approx(h["new"][mode]["p50_ms"]
                                                                      / h["baseline"][mode]["p50_ms"])
    baseline_model = next(m for m in report["models"] if m["model_set"] == "baseline")
    # the headline's network is the new (lite) model; version 3 does more work per pass
    assert baseline_model["macs"][0]["total"] > h["network"]["macs"] > 0
    text = to_text(report_tables(report))
    assert "Headline: camera field 1280x960, int8 model" in text and "New vs baseline" in text
    ratio_line = next(line for line in text.splitlines() if line.startswith("calibrated p50 ms"))
    assert ratio_line.split()[-1] == f"{h['new_over_baseline']['calibrated_p50']:.3f}"
    assert "of this run's matmul peak" in text and "load average" in text


def test_device_process_peak_is_one_pipeline_in_its_own_process(compare_report):
    """The device figure comes from a child running the headline model alone: one per calibration
    mode, torch never imported, and below the bench process that held four pipelines at once."""
    report, _ = compare_report
    h = report["headline"]
    device = h["device_process"]
    assert [m["calibrated"] for m in device["modes"]] == [True, False]
    assert device["peak_rss_mb"] == max(m["peak_rss_mb"] for m in device["modes"])
    for mode in device["modes"]:
        assert 0 < mode["peak_rss_mb"] < h["peak_rss_mb"] <= report["memory"]["peak_rss_mb"]
        assert mode["pid"] != os.getpid() and not mode["torch_imported"]
        assert mode["end_to_end_ms"]["n"] == RUNS and mode["stages_not_available"] == ["publish"]  # --mqtt none
    text = to_text(report_tables(report))
    assert f"peak RSS, device process             {device['peak_rss_mb']:.0f} MB" in text
    assert "peak RSS, whole bench process" in text


def test_device_process_peak_is_not_its_parents(tmp_path):
    """A child of a large process reports its own peak: 400 MB held here must not show in it
    (getrusage's ru_maxrss would carry it over the child's exec)."""
    frame = load_frame(tmp_path, None, None, kind="synthetic")
    held = np.ones(400 * 1024 * 1024 // 8)
    spec = DeviceRunSpec(str(LITE / "segmentation.int8.onnx"), "int8", str(frame.file), frame.um_per_px,
                         "CPUExecutionProvider", 1, 0, 1, "none")
    figures = measure_device_process(spec, timeout_s=120)
    assert held.sum() > 0 and peak_rss_mb() > 400
    assert 0 < figures["peak_rss_mb"] < 400 and figures["calibrated"] and figures["end_to_end_ms"]["n"] == 1


def _edge_bench(*args: str) -> subprocess.CompletedProcess:
    """The console script in a fresh process, printing its peak RSS (MB) as the last stderr line.

    VmHWM, not getrusage: a forked child's ru_maxrss starts from its parent's (this test process)."""
    code = ("import atexit, re, sys\n"
            "hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024\n"
            "atexit.register(lambda: print(hwm(), file=sys.stderr))\n"
            "from smearscope.cli.edge_bench import main\nmain()\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def _error_line(proc: subprocess.CompletedProcess) -> tuple[str, int]:
    *lines, rss = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0], int(rss)


@pytest.mark.parametrize("width,height,megapixels", [(8000, 6000, "48.0"), (6000, 4500, "27.0")])
def test_a_field_far_beyond_a_camera_is_refused_in_one_line(tmp_path, width, height, megapixels):
    from test_hostile_input import png_claiming

    image = tmp_path / "huge.png"
    image.write_bytes(png_claiming(width, height, rows=height))  # a complete image, all rows present
    proc = _edge_bench("--quick", "--image", str(image))
    line, rss_mb = _error_line(proc)
    assert proc.returncode == 1
    assert f"image is {width}x{height} ({megapixels} megapixels), more than the 24-megapixel limit" in line
    # Never decoded: the interpreter with ONNX Runtime and OpenCV loaded is under 100 MB here, and
    # the smaller of the two frames alone would add 77 MB.
    assert rss_mb < 150
    assert proc.stdout == ""


@pytest.mark.parametrize("um_per_px,needle", [
    ("2", "--um-per-px: 2 µm/px makes a 7.5 µm red cell 3.75 px across; the model card rescales by 0.1-4x "
          "to 32 px, so it takes 0.0234-0.938 µm/px"),
    ("0.005", "--um-per-px: 0.005 µm/px is not a plausible microscope calibration (expected 0.01-10 µm/px)"),
])
def test_a_calibration_the_card_cannot_take_is_refused_in_one_line(um_per_px, needle):
    proc = _edge_bench("--quick", "--um-per-px", um_per_px)
    line, _ = _error_line(proc)
    assert proc.returncode == 2 and needle in line


def test_field_and_image_together_and_a_baseline_without_the_variant(cli_runner, tmp_path):
    result = cli_runner.invoke(cli, ["--field", "synthetic", "--image", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "choose one of --field and --image" in result.output
    empty = tmp_path / "empty-set"
    empty.mkdir()
    proc = _edge_bench("--quick", "--baseline-models", str(empty))
    line, _ = _error_line(proc)
    assert proc.returncode == 2 and "no segmentation model found" in line and str(empty) in line
