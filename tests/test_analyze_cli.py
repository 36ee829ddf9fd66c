"""`smearscope analyze`: outputs per image at the input's own size; bad input is one clear line per file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from _device_model import UM_PER_PX, trained_model_path
from runtime.contracts.modelcard import card_path_for
from runtime.capture.synthetic import generate_smear


@pytest.fixture(scope="session")
def model_path():
    return trained_model_path()


def _analyze(*args, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smearscope", "analyze", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), generate_smear(21, 181, 243, UM_PER_PX).image)
    cv2.imwrite(str(folder / "second.jpg"), generate_smear(22, 200, 200, UM_PER_PX).image)
    cv2.imwrite(str(folder / "blank.png"), np.full((120, 160, 3), 224, np.uint8))
    cv2.imwrite(str(folder / "overexposed.png"), np.full((120, 160, 3), 255, np.uint8))
    cv2.imwrite(str(folder / "grey.png"), np.full((120, 160), 128, np.uint8))
    cv2.imwrite(str(folder / "alpha.png"), np.full((120, 160, 4), 128, np.uint8))
    cv2.imwrite(str(folder / "tiny.png"), generate_smear(3, 16, 16, UM_PER_PX).image[:5, :7])
    (folder / "empty.png").write_bytes(b"")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 20)
    return folder


def test_good_and_bad_images_in_one_run(model_path, images, tmp_path):
    out = tmp_path / "out"
    result = _analyze(*sorted(images.iterdir()), "--model", model_path, "--out", out, cwd=tmp_path)
    assert result.returncode == 1  # some inputs failed
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 5
    for name, why in [("grey.png", "1 channel"), ("alpha.png", "4 channels"), ("tiny.png", "smaller than the network stride"),
                      ("empty.png", "file is empty"), ("corrupt.jpg", "not a readable image")]:
        assert any(name in line and why in line for line in errors), (name, errors)
    assert "4 of 9 image(s) analysed" in result.stderr

    for stem, size in [("good", (181, 243)), ("second", (200, 200))]:
        record = json.loads((out / f"{stem}.json").read_text())
        assert set(record) >= {"counts", "area_pct", "quality", "model", "timings_ms"}
        assert set(record["counts"]) == {"rbc", "wbc", "platelet"} and record["counts"]["rbc"] > 0
        assert set(record["area_pct"]) == {"background", "rbc", "wbc", "platelet"}
        assert sum(record["area_pct"].values()) == pytest.approx(100.0, abs=0.01)
        assert record["model"]["sha256"] == json.loads(card_path_for(model_path).read_text())["sha256"]
        assert {"quality", "preprocess", "inference", "postprocess", "total"} <= set(record["timings_ms"])
        mask = cv2.imread(str(out / f"{stem}.mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == size and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2, 3}
        assert len(record["cells"]) == sum(record["counts"].values())  # one record per counted cell
        assert {c["class"] for c in record["cells"]} <= {"rbc", "wbc", "platelet"}
        assert record["review"]["needed"] and "scale_estimated" in [r["code"] for r in record["review"]["reasons"]]
        overlay = cv2.imread(str(out / f"{stem}.overlay.png"))
        zoom = max(1.0, 900 / max(size))  # the frame enlarged for legibility, the panel beside it
        assert overlay.shape[0] == round(size[0] * zoom) and overlay.shape[1] > round(size[1] * zoom)
        assert cv2.imread(str(out / f"{stem}.gallery.png")) is not None

    for stem in ("blank", "overexposed"):
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["counts"] == {"rbc": 0, "wbc": 0, "platelet": 0} and record["cells"] == []
        assert record["quality"]["accepted"] is False and record["quality"]["reasons"]
        assert any(line.startswith("warning:") and f"{stem}.png" in line for line in result.stderr.splitlines())
    assert not (out / "grey.json").exists()


def test_calibration_adds_derived_estimates_and_same_stems_do_not_collide(model_path, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "field.png"), generate_smear(30, 160, 160, UM_PER_PX).image)
    out = tmp_path / "out"
    result = _analyze(tmp_path / "a" / "field.png", tmp_path / "b" / "field.png", "--model", model_path,
                      "--out", out, "--um-per-px", UM_PER_PX, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first, second = (json.loads((out / name).read_text()) for name in ("field.json", "field-2.json"))
    assert first["quality"]["scale"]["source"] == "calibration"
    assert first["derived"]["density_per_mm2"]["rbc"] > 0
    assert first["counts"] == second["counts"]  # same pixels, same answer


def test_model_hash_mismatch_names_the_file_without_traceback(model_path, images, tmp_path):
    bad = tmp_path / "models" / model_path.name
    bad.parent.mkdir()
    shutil.copy(card_path_for(model_path), card_path_for(bad))
    bad.write_bytes(model_path.read_bytes()[:-10] + b"0123456789")
    result = _analyze(images / "good.png", "--model", bad, "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode != 0
    assert str(bad) in result.stderr and "does not match its card" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_default_model_is_the_shipped_one(images, tmp_path):
    env = {**os.environ, "SMEARSCOPE_MODELS": str(tmp_path / "no-models")}
    result = _analyze(images / "good.png", cwd=tmp_path, env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "segmentation.int8.onnx: model file does not exist" in result.stderr
