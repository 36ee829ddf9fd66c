"""The synthetic smear generator: exact truth, determinism, parameter checks."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.contracts.classes import CELL_CLASSES, NUM_CLASSES
from runtime.contracts.errors import ConfigError
from runtime.contracts.classes import area_percentages
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
