"""The synthetic smear generator: exact truth, determinism, parameter checks, and the shipped model counting it like its truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from runtime.analysis.analyzer import Analyzer
from runtime.capture.cameras import SyntheticCamera
from runtime.contracts.classes import CELL_CLASSES, NUM_CLASSES
from runtime.contracts.config import SyntheticCameraConfig
from runtime.contracts.errors import ConfigError
from runtime.inference.session import SessionOptions
from runtime.contracts.classes import area_percentages
from runtime.inference.model import SegmentationModel
from runtime.capture.synthetic import SmearStyle, generate_smear


@pytest.mark.parametrize("seed,um_per_px", [(0, 0.2), (1, 0.1), (7, 0.3)])
def test_counts_and_area_agree_exactly_with_masks(seed, um_per_px):
    smear = generate_smear(seed, 240, 320, um_per_px=um_per_px)
    assert smear.image.shape == (240, 320, 3) and smear.image.dtype == np.uint8
    assert smear.mask.shape == (240, 320) and smear.mask.dtype == np.uint8
    assert smear.instances.dtype == np.int32
    # The class mask is the instance map seen through the instance classes.
    assert np.array_equal(smear.mask, smear.instance_classes[smear.instances])
    assert int(smear.mask.max()) < NUM_CLASSES
    # Counts: visible instances per class, recomputed independently from the instance map.
    ids = np.unique(smear.instances)
    ids = ids[ids > 0]
    for name, cls in CELL_CLASSES.items():
        assert smear.counts[name] == int(np.sum(smear.instance_classes[ids] == cls)), name
    # Area percentages: pixel shares of the mask.
    hist = np.bincount(smear.mask.ravel(), minlength=NUM_CLASSES)
    assert smear.area_pct == area_percentages(smear.mask)
    assert smear.area_pct["rbc"] == pytest.approx(100 * hist[1] / smear.mask.size, abs=1e-4)
    assert sum(smear.area_pct.values()) == pytest.approx(100.0, abs=1e-3)
    assert smear.counts["rbc"] > 5 and smear.counts["wbc"] >= 1


def test_border_cells_count():
    smear = generate_smear(3, 200, 200, um_per_px=0.2)
    border_ids = np.unique(np.concatenate([smear.instances[0], smear.instances[-1],
                                           smear.instances[:, 0], smear.instances[:, -1]]))
    assert np.count_nonzero(border_ids) > 0
    all_ids = np.unique(smear.instances)
    assert sum(smear.counts.values()) == np.count_nonzero(all_ids)


def test_seeded_determinism():
    a = generate_smear(11, 128, 160)
    b = generate_smear(11, 128, 160)
    c = generate_smear(12, 128, 160)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances)
    assert a.counts == b.counts
    assert not np.array_equal(a.image, c.image)


def test_cells_look_like_cells():
    smear = generate_smear(5, 256, 256, um_per_px=0.2)
    grey = smear.image.mean(axis=2)
    # Stained cells are darker than plasma; white-cell nuclei are the darkest objects.
    assert grey[smear.mask == 0].mean() > grey[smear.mask == 1].mean() + 20
    rbc_px = 7.5 / 0.2
    assert smear.counts["rbc"] < 2 * 256 * 256 / (np.pi * (rbc_px / 2) ** 2)


def test_jpeg_and_bad_parameters():
    smear = generate_smear(2, 96, 96, style=SmearStyle(jpeg_quality=60))
    assert smear.image.shape == (96, 96, 3)
    with pytest.raises(ConfigError):
        generate_smear(0, 8, 8)
    with pytest.raises(ConfigError):
        generate_smear(0, 64, 64, um_per_px=0)
    with pytest.raises(ConfigError):
        SmearStyle(jpeg_quality=0)



# --- the shipped model on synthetic smears: the generator looks enough like real smears -----------


@dataclass(frozen=True)
class Agreement:
    """The model's counts against the generator's truth over a run of frames."""

    frames: int
    wbc_exact: float
    rbc_mape: float
    rbc_diameter_px: tuple[float, ...]


@pytest.fixture(scope="module")
def shipped_analyzer() -> Analyzer:
    """The shipped int8 model (models/segmentation.int8.onnx), as the device runs it."""
    return Analyzer(SegmentationModel.load(None, SessionOptions(providers=("cpu",), intra_op_threads=2)))


def agreement(analyzer: Analyzer, frames: int, um_per_px_known: bool) -> Agreement:
    """Analyse the demo camera's seeded synthetic smears and compare with their truth."""
    camera = SyntheticCamera(SyntheticCameraConfig(seed=0))
    exact, errors, diameters = 0, [], []
    for _ in range(frames):
        frame = camera.capture()
        truth = frame.truth["counts"]
        analysis = analyzer.analyze(frame.image, um_per_px=frame.um_per_px if um_per_px_known else None)
        exact += analysis.counts["wbc"] == truth["wbc"]
        errors.append(abs(analysis.counts["rbc"] - truth["rbc"]) / truth["rbc"])
        diameters.append(analysis.scale.rbc_diameter_px)
    return Agreement(frames, exact / frames, float(np.mean(errors)), tuple(diameters))


@pytest.mark.slow
def test_shipped_model_counts_50_synthetic_smears_like_their_truth(shipped_analyzer):
    """On 50 seeded frames: white cells counted exactly on >= 95 %, red-cell count MAPE <= 8 %."""
    result = agreement(shipped_analyzer, 50, um_per_px_known=True)
    assert result.wbc_exact >= 0.95 and result.rbc_mape <= 0.08, result


@pytest.mark.parametrize("um_per_px_known", [True, False], ids=["calibrated", "scale-from-frame"])
def test_shipped_model_counts_synthetic_smears_like_their_truth(shipped_analyzer, um_per_px_known):
    """The same on 8 frames; without a calibration the red cells must also measure their true size
    (7.5 µm at the camera's 0.25 µm/px: 30 px) in the scale search."""
    result = agreement(shipped_analyzer, 8, um_per_px_known)
    assert result.wbc_exact >= 0.95 and result.rbc_mape <= 0.08, result
    if not um_per_px_known:
        assert float(np.median(result.rbc_diameter_px)) == pytest.approx(7.5 / 0.25, rel=0.1), result
