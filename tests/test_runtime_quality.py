"""The quality gate accepts good smears (synthetic and real) and rejects bad frames with a reason."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.contracts.config import QualityConfig
from runtime.inference.preprocess import PreprocessParams, decide_scale
from runtime.analysis.quality import assess
from runtime.capture.synthetic import generate_smear

PARAMS = PreprocessParams()
CONFIG = QualityConfig()


def _assess(image):
    return assess(image, CONFIG, decide_scale(PARAMS, image).scale)


@pytest.mark.parametrize("seed", range(4))
def test_synthetic_smears_are_accepted(seed):
    report = _assess(generate_smear(seed, 384, 512, 0.25).image)
    assert report.accepted, report.reasons
    assert report.focus > CONFIG.min_focus and report.cell_coverage > 0.1


def test_blurred_frame_is_rejected_as_out_of_focus():
    image = generate_smear(1, 384, 512, 0.25).image
    sharp = _assess(image)
    blurred = _assess(cv2.GaussianBlur(image, (0, 0), 6))
    assert sharp.accepted
    assert not blurred.accepted
    assert blurred.reasons[0].startswith("out of focus")
    assert blurred.focus < sharp.focus / 10


def test_blank_overexposed_and_dark_frames_get_reasons():
    blank = _assess(np.full((300, 400, 3), 228, np.uint8))
    assert not blank.accepted and any(r.startswith("no cells") for r in blank.reasons)
    smear = generate_smear(2, 300, 400, 0.25).image
    over = _assess(np.clip(smear.astype(np.int32) * 3, 0, 255).astype(np.uint8))
    assert not over.accepted and over.reasons[0].startswith("overexposed")
    dark = _assess((smear // 8).astype(np.uint8))
    assert not dark.accepted and dark.reasons[0].startswith("underexposed")


def test_disabled_gate_measures_but_accepts():
    report = assess(np.full((64, 64, 3), 255, np.uint8), QualityConfig(enabled=False))
    assert report.accepted and report.brightness == 255.0


def test_real_training_images_pass_the_gate(shared_data):
    files = sorted((shared_data / "txl_pbc" / "images" / "train").glob("*"))[::50]
    assert files
    rejected = []
    for path in files:
        report = _assess(cv2.imread(str(path)))
        if not report.accepted:
            rejected.append((path.name, report.reasons))
    assert not rejected, rejected


def test_cell_free_plasma_with_noise_and_lighting_is_rejected():
    from runtime.capture.synthetic import SmearStyle

    style = SmearStyle(rbc_coverage=0.0, min_wbc=0, wbc_per_10k_um2=0.0, platelets_per_rbc=0.0, noise_sigma=(4.0, 4.0))
    smear = generate_smear(3, 384, 512, 0.25, style=style)
    assert smear.counts == {"rbc": 0, "wbc": 0, "platelet": 0}
    report = _assess(smear.image)
    assert not report.accepted and report.reasons[0].startswith("no cells")


def test_the_bundled_real_frames_pass_the_gate():
    """Real frames that ship with the package (a clone without the full data set runs this)."""
    from runtime.capture.bundled import bundled_frames

    reports = {frame.name: _assess(frame.load()) for frame in bundled_frames()}
    assert all(r.accepted for r in reports.values()), {k: r.reasons for k, r in reports.items() if not r.accepted}


def test_a_segmentation_without_red_cells_beside_other_cells_is_no_smear():
    """Noise read as scattered white cells on background (what the lite network makes of random
    pixels: 8.7 % white, no red) is refused; a real field, an empty one (the gate's own 'no cells'
    reason) and white cells over most of the frame each get their own verdict."""
    from runtime.analysis.quality import implausible_segmentation

    noise = implausible_segmentation({"background": 91.3, "rbc": 0.0, "wbc": 8.7, "platelet": 0.0})
    assert len(noise) == 1 and "red cells cover 0.0%" in noise[0]
    assert implausible_segmentation({"background": 55.0, "rbc": 40.0, "wbc": 4.5, "platelet": 0.5}) == []
    assert implausible_segmentation({"background": 100.0, "rbc": 0.0, "wbc": 0.0, "platelet": 0.0}) == []
    crowded = implausible_segmentation({"background": 11.0, "rbc": 0.0, "wbc": 89.0, "platelet": 0.0})
    assert len(crowded) == 1 and "white cells cover 89%" in crowded[0]
