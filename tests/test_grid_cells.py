"""Cells found on the network grid, recorded in frame pixels: a drawn grid mask at a known scale."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from runtime.analysis.analyzer import FrameAnalysis, derived_estimates
from runtime.analysis.counting import find_cells, labels_at_frame
from runtime.analysis.quality import QualityReport
from runtime.analysis.scale_search import Segmentation
from runtime.contracts.classes import PLATELET, RBC, WBC, area_percentages
from runtime.inference.preprocess import ScaleDecision, frame_index, mask_to_frame, plan_geometry

D_GRID = 32.0  # red-cell diameter on the grid (the network's size)


def _grid_smear(hw: tuple[int, int]) -> np.ndarray:
    """On a grid of `hw`: a white cell, a platelet, two touching red cells and one cut by the left edge."""
    mask = np.zeros(hw, np.uint8)
    cv2.circle(mask, (60, 50), 20, WBC, -1)
    cv2.circle(mask, (120, 30), 5, PLATELET, -1)
    cv2.circle(mask, (60, 110), 16, RBC, -1)
    cv2.circle(mask, (88, 110), 16, RBC, -1)
    cv2.circle(mask, (5, 60), 16, RBC, -1)
    return mask


@pytest.mark.parametrize("frame_hw,scale", [((300, 400), 0.5), ((960, 1280), 0.3093), ((241, 333), 0.61)])
def test_grid_cells_land_at_their_frame_coordinates(frame_hw, scale):
    geometry = plan_geometry(frame_hw, scale, 16)
    grid = _grid_smear(geometry.resized_hw)
    found = find_cells(grid, rbc_diameter_px=D_GRID, um_per_px=0.1, geometry=geometry)
    assert found.cells.counts == {"rbc": 3, "wbc": 1, "platelet": 1}
    (rh, rw), (h, w) = geometry.resized_hw, geometry.frame_hw
    sy, sx = h / rh, w / rw  # frame pixels per grid pixel
    (wbc,) = found.cells.by_class["wbc"]
    # The disc's centre (60, 50) on the grid is at ((60 + 0.5) * sx - 0.5, ...) in the frame.
    assert wbc.centre_px == pytest.approx(((60 + 0.5) * sx - 0.5, (50 + 0.5) * sy - 0.5), abs=1e-6)
    assert wbc.area_px == round(int((grid == WBC).sum()) * sx * sy)
    assert wbc.equivalent_diameter_px == pytest.approx(40 * math.sqrt(sx * sy), rel=0.03)
    assert wbc.area_um2 == pytest.approx(wbc.area_px * 0.01) and wbc.centre_um == pytest.approx(
        (wbc.centre_px[0] * 0.1, wbc.centre_px[1] * 0.1))
    # Every box is exactly the span of its cell's pixels in the frame-size labels.
    frame_labels = found.frame_labels()
    assert all(lab.shape == (h, w) for lab in frame_labels.values())
    for cell in found.cells.ordered():
        ys, xs = np.nonzero(frame_labels[cell.cls] == cell.number)
        x, y, bw, bh = cell.bbox_px
        assert (x, y, x + bw - 1, y + bh - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
    # Border contact is the frame's: only the red cell cut by the left edge, and its box starts at x = 0.
    border = [c for c in found.cells.ordered() if c.on_border]
    assert len(border) == 1 and border[0].cls == "rbc" and border[0].bbox_px[0] == 0


def test_grid_and_frame_size_masks_give_the_same_cells():
    """find_cells on the grid and on the grid mask upsampled to the frame agree: counts, centres
    within one grid pixel (2.5 frame pixels: the line between touching red cells is drawn at each
    resolution's own pixels), areas within 5 % (a 2.5x nearest upsampling repeats grid columns 2 or 3
    times, so a small cell's upsampled pixel count strays from its area / scale^2)."""
    geometry = plan_geometry((600, 800), 0.4, 16)
    grid = _grid_smear(geometry.resized_hw)
    on_grid = find_cells(grid, rbc_diameter_px=D_GRID, geometry=geometry).cells
    on_frame = find_cells(mask_to_frame(grid, geometry), rbc_diameter_px=D_GRID / 0.4).cells
    assert on_grid.counts == on_frame.counts
    for a, b in zip(on_grid.ordered(), on_frame.ordered()):
        assert a.cls == b.cls
        assert a.centre_px == pytest.approx(b.centre_px, abs=2.5)
        assert a.area_px == pytest.approx(b.area_px, rel=0.05)


def test_the_nearest_map_covers_the_frame_in_order():
    for n_frame, n_grid in ((960, 297), (1280, 396), (100, 100), (77, 160)):
        index = frame_index(n_frame, n_grid)
        assert np.all(np.diff(index) >= 0) and 0 <= index[0] and index[-1] <= n_grid - 1
        assert np.all(index == np.floor((np.arange(n_frame) + 0.5) * n_grid / n_frame))
        if n_grid <= n_frame:  # a coarser grid: every grid pixel shows in the frame
            assert np.array_equal(np.unique(index), np.arange(n_grid))


def test_frame_analysis_draws_at_the_frame_size_and_measures_the_whole_field():
    geometry = plan_geometry((300, 400), 0.5, 16)
    grid = _grid_smear(geometry.resized_hw)
    found = find_cells(grid, rbc_diameter_px=D_GRID, um_per_px=0.25, geometry=geometry)
    derived = derived_estimates(grid, found.cells.counts, 0.25, geometry.frame_hw)
    assert derived["field_area_mm2"] == pytest.approx(300 * 400 * 0.25**2 / 1e6)
    share = float((grid == WBC).mean())
    assert derived["area_um2"]["wbc"] == pytest.approx(share * 300 * 400 * 0.25**2, abs=0.1)
    quality = QualityReport(True, 100.0, 150.0, 0.0, 0.3, ())
    scale = ScaleDecision(0.5, "calibration", 64.0)
    seg = Segmentation(mask=grid, centres=None, scale=scale, rbc_diameter_px=64.0, passes=1, geometry=geometry)
    analysis = FrameAnalysis(quality, scale, grid, found.cells.counts, area_percentages(grid), derived, None,
                             cells=found.cells, found=found, um_per_px=0.25, segmentation=seg)
    assert np.array_equal(analysis.frame_mask(), mask_to_frame(grid, geometry))  # no scores: nearest
    assert np.array_equal(analysis.frame_labels()["rbc"], labels_at_frame(found.labels, geometry)["rbc"])
