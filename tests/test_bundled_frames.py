"""The real frames shipped with the package: complete, licensed, small, and counted right by the shipped model.

Everything here reads only the package's own files (no ../shared), so it runs on a fresh clone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from runtime.analysis.analyzer import Analyzer
from runtime.capture.bundled import FRAMES_DIR, bundled_frames, bundled_um_per_px, label_counts
from runtime.contracts.errors import DataError
from runtime.inference.session import SessionOptions
from runtime.inference.model import SegmentationModel
from training.txl_pbc import count_boxes, read_boxes


@pytest.fixture(scope="module")
def analyzer():
    """The shipped int8 model, as a device runs it (models/segmentation.int8.onnx)."""
    return Analyzer(SegmentationModel.load(None, SessionOptions(providers=("cpu",), intra_op_threads=2)))


def test_frames_are_complete_licensed_and_small():
    frames = bundled_frames()
    assert 8 <= len(frames) <= 16
    assert all(FRAMES_DIR in f.image_path.parents for f in frames)
    shapes = {f.load().shape for f in frames}
    assert shapes == {(480, 640, 3)}  # one source and size: four of them tile a 1280x960 field
    for name in ("LICENSE.TXL-PBC.txt", "LICENSE.BCCD.txt", "README.md", "frames.json"):
        assert (FRAMES_DIR / name).is_file(), name
    assert "MIT License" in (FRAMES_DIR / "LICENSE.TXL-PBC.txt").read_text()
    total = sum(p.stat().st_size for p in FRAMES_DIR.rglob("*") if p.is_file())
    assert total < 1_500_000, total


def test_label_counts_agree_with_the_training_reader():
    """The device-side count reader and training.txl_pbc read the same files the same way."""
    for frame in bundled_frames():
        counts = frame.label_counts()
        assert counts == count_boxes(read_boxes(frame.label_path, 640, 480)), frame.name
        assert 0 <= counts["wbc"] <= 3 and counts["rbc"] > 0


def test_scale_follows_from_the_red_cell_labels():
    """The stated µm/px is 7.5 µm over the median whole red-cell box: recheck it on the bundled labels."""
    diameters = []
    for frame in bundled_frames():
        for box in read_boxes(frame.label_path, 640, 480):
            inside = box.cx - box.w / 2 > 2 and box.cy - box.h / 2 > 2 and box.cx + box.w / 2 < 638 and box.cy + box.h / 2 < 478
            if box.cls == 1 and inside:
                diameters.append(box.diameter)
    assert len(diameters) > 50
    assert bundled_um_per_px() == pytest.approx(7.5 / float(np.median(diameters)), rel=0.05)


def test_bad_label_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=r"bad.txt:2: expected"):
        label_counts(bad)
    with pytest.raises(DataError, match="cannot read"):
        label_counts(tmp_path / "missing.txt")


@pytest.mark.parametrize("calibrated", [True, False], ids=["calibrated", "scale-from-frame"])
def test_shipped_model_counts_each_frame_like_its_labels(analyzer, calibrated):
    """Per frame: white cells exact, red cells within 10 % of the labels."""
    um_per_px = bundled_um_per_px() if calibrated else None
    misses = []
    for frame in bundled_frames():
        labels = frame.label_counts()
        counts = analyzer.analyze(frame.load(), um_per_px=um_per_px).counts
        if counts["wbc"] != labels["wbc"] or abs(counts["rbc"] - labels["rbc"]) > 0.1 * labels["rbc"]:
            misses.append((frame.name, labels, counts))
    assert not misses, misses


def test_a_built_wheel_carries_the_frames(tmp_path, repo_root):
    """A non-editable install gets the frames: they are package data of a wheel built from a clean copy
    (a copy, so no earlier build/ folder can lend the wheel files the configuration no longer ships)."""
    source = tmp_path / "src"
    shutil.copytree(repo_root, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*cache", ".scratch", "runs", "out"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), "-q"], check=True, timeout=300, capture_output=True)
    wheel = next(tmp_path.glob("smearscope-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"runtime/capture/{p.relative_to(FRAMES_DIR.parent).as_posix()}"
                for p in FRAMES_DIR.rglob("*") if p.is_file()}
    assert len(expected) >= 2 * 8 + 4, expected
    assert expected <= names, sorted(expected - names)
    assert "runtime/capture/bundled.py" in names
