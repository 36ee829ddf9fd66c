"""`smearscope demo`: simulated button presses through the whole device path, readable output, saved files."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys

import cv2
import pytest

from _device_model import trained_model_path
from runtime.delivery.sinks import StdoutSink
from runtime.contracts.schema import validate


@pytest.fixture(scope="session")
def model_path():
    return trained_model_path()


def test_demo_prints_a_table_and_saves_results(model_path, tmp_path, repo_root):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "smearscope", "demo", "--model", str(model_path), "--out", str(out),
                             "--presses", "3", "--guideline", "ada", "--threads", "2"],
                            capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    assert "simulated controller" in text  # presses came over the pseudo-terminal, not a shortcut
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("#") and "RBC" in line)
    rows = lines[header + 1:header + 4]
    assert [row.split()[1] for row in rows] == ["D-001", "D-001", "D-002"]
    table_fields = [f"{row.split()[1]}_f{row.split()[2]}" for row in rows]  # the files follow the table's numbering
    assert "diagnosis (ADA)" in lines[header]
    assert "per sample" in text and "status LED: idle -> busy" in text

    results = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]
    assert len(results) == 3
    for message in results:
        validate(message)
    by_seq = sorted(results, key=lambda m: m["seq"])
    assert [m["diagnosis"]["status"] for m in by_seq] == ["diabetes", "diabetes", "normal"]
    assert all(m["sample"]["patient_id"].startswith("p-") for m in by_seq)  # pseudonymous
    overlays = sorted((out / "overlays").glob("*.overlay.png"))
    assert len(overlays) == 3 and cv2.imread(str(overlays[0])).shape == (675, 1200, 3)  # frame at 900 px wide + panel
    assert [p.name.split(".")[0] for p in overlays] == sorted(table_fields) == ["D-001_f1", "D-001_f2", "D-002_f1"]

    # delivery: outbox -> private Mosquitto -> server -> SQLite, every result receipted
    assert "delivered: 3 sent over MQTT, 3 receipts, 0 left in the outbox" in text
    assert "holds 3 result(s) and 3 field image(s)" in text  # each analysed frame reached the server
    with sqlite3.connect(out / "server.sqlite3") as db:
        stored = {row[0] for row in db.execute("SELECT result_id FROM results")}
    assert stored == {m["result_id"] for m in results}


def test_demo_takes_any_publisher(model_path, tmp_path):
    from smearscope.cli.demo import DemoSettings, run_demo

    stream, printed = io.StringIO(), []
    settings = DemoSettings(out_dir=tmp_path, presses=2, model_path=model_path, guideline="who", source="synthetic",
                            seed=5, threads=2)
    report = run_demo(settings, publisher=StdoutSink(stream), echo=printed.append)
    messages = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(messages) == 2 and [o.status for o in report.outcomes] == ["ok", "ok"]
    for message in messages:
        validate(message)
    assert report.summaries["D-001"]["fields"] == 2
    assert any("D-001" in line for line in printed)


def test_demo_with_the_shipped_models(repo_root, tmp_path):
    """What a fresh clone runs: no options but an output folder (skipped until the model ships)."""
    from runtime.inference.model import default_model_path

    if not default_model_path().is_file():
        pytest.skip(f"{default_model_path()} is not in this checkout")
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "smearscope", "demo", "--out", str(out), "--presses", "2"],
                            capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    results = [json.loads(p.read_text()) for p in (out / "results").glob("*.json")]
    assert len(results) == 2
    for message in results:
        validate(message)
        assert message["model"]["sha256"] == json.loads(default_model_path().with_suffix(".json").read_text())["sha256"]
    assert "delivered: 2 sent over MQTT, 2 receipts, 0 left in the outbox" in result.stdout


def test_the_demo_counts_the_bundled_real_frames_as_their_labels_do(repo_root, tmp_path):
    """The default demo on every bundled real frame: white cells exact, red cells within 10 % of the labels."""
    from runtime.capture.bundled import bundled_frames

    frames = bundled_frames()
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "smearscope", "demo", "--out", str(out), "--no-delivery",
                             "--presses", str(len(frames))], capture_output=True, text=True, cwd=repo_root, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    results = sorted((json.loads(p.read_text()) for p in (out / "results").glob("*.json")), key=lambda m: m["seq"])
    assert len(results) == len(frames)
    for message, frame in zip(results, frames):  # the camera takes the frames in name order
        labels, counts = frame.label_counts(), message["counts"]
        assert counts["wbc"] == labels["wbc"], (frame.name, counts, labels)
        assert abs(counts["rbc"] - labels["rbc"]) <= 0.1 * labels["rbc"], (frame.name, counts, labels)
    assert f"({frames[0].label_counts()['rbc']})" in result.stdout  # the labels are shown beside the counts
