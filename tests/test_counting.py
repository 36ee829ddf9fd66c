"""Counting rules on drawn masks and on synthetic smears whose true counts are known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.contracts.classes import PLATELET, RBC, WBC
from runtime.analysis.counting import (
    DEFAULT_RULES,
    CountRules,
    _dilated,
    _disc_maxima,
    count_cells,
    count_cells_field_edge,
    find_cells,
    label_cells,
)
from runtime.contracts.classes import area_percentages
from runtime.inference.cell_size import rbc_diameter_from_mask
from runtime.capture.synthetic import generate_smear
from training.labels import boxes_from_instances, centre_heatmap

D = 30  # red-cell diameter of the drawn masks


def disc(mask: np.ndarray, x: int, y: int, r: int, cls: int) -> None:
    cv2.circle(mask, (x, y), r, int(cls), -1)


def test_empty_and_blank_masks_count_nothing():
    blank = np.zeros((64, 80), np.uint8)
    assert count_cells(blank) == {"rbc": 0, "wbc": 0, "platelet": 0}
    assert count_cells_field_edge(blank) == {"rbc": 0, "wbc": 0, "platelet": 0}
    assert count_cells(blank, np.zeros((64, 80), np.float32)) == {"rbc": 0, "wbc": 0, "platelet": 0}
    assert area_percentages(blank)["background"] == 100.0


def test_touching_red_cells_are_split_without_a_centre_head():
    mask = np.zeros((120, 200), np.uint8)
    disc(mask, 40, 60, D // 2, RBC)
    disc(mask, 66, 60, D // 2, RBC)  # overlaps the first: one connected component
    disc(mask, 140, 60, D // 2, RBC)
    n_components = cv2.connectedComponents((mask == RBC).astype(np.uint8))[0] - 1
    assert n_components == 2
    assert count_cells(mask, rbc_diameter_px=D)["rbc"] == 3
    assert count_cells(mask)["rbc"] == 3  # diameter measured from the mask itself


def test_centre_heat_map_peaks_count_red_cells():
    mask = np.zeros((120, 200), np.uint8)
    heat = np.zeros((120, 200), np.float32)
    for x in (40, 62, 84, 150):  # a chain of three overlapping cells and one alone
        disc(mask, x, 60, D // 2, RBC)
        cv2.circle(heat, (x, 60), 4, 1.0, -1)
    heat = cv2.GaussianBlur(heat, (0, 0), 3)
    heat /= heat.max()
    assert count_cells(mask, heat, rbc_diameter_px=D)["rbc"] == 4


def test_white_cells_platelets_and_min_area():
    mask = np.zeros((160, 240), np.uint8)
    disc(mask, 50, 80, 28, WBC)
    disc(mask, 100, 80, 28, WBC)  # two touching white cells
    disc(mask, 180, 40, 5, PLATELET)
    mask[150, 150] = PLATELET  # a one-pixel speck is noise, not a platelet
    mask[120:124, 60:64] = PLATELET  # 16 px, 0.023 of a red cell (about 1.1 µm across): debris too
    mask[100:103, 200:203] = WBC  # nor is a tiny white fragment a white cell
    counts = count_cells(mask, rbc_diameter_px=D)
    assert counts == {"rbc": 0, "wbc": 2, "platelet": 1}


def test_border_cells_count_and_field_edge_rule_drops_right_and_bottom():
    mask = np.zeros((100, 100), np.uint8)
    disc(mask, 5, 50, D // 2, RBC)  # cut by the left edge: counted by both
    disc(mask, 96, 50, D // 2, RBC)  # cut by the right edge: only in `counts`
    disc(mask, 50, 97, 18, WBC)  # cut by the bottom edge
    disc(mask, 50, 30, D // 2, RBC)
    assert count_cells(mask, rbc_diameter_px=D) == {"rbc": 3, "wbc": 1, "platelet": 0}
    assert count_cells_field_edge(mask, rbc_diameter_px=D) == {"rbc": 2, "wbc": 0, "platelet": 0}


def test_field_edge_rule_reads_pixels_not_a_cut_cells_widened_box():
    """A red sliver cut by the left edge near the bottom: its box is widened along the edge to the
    chord of a whole disc (CountRules.rbc_cut_chord) and reaches the bottom row, but its pixels stop
    short of it, so the counting-frame rule keeps it."""
    mask = np.zeros((100, 100), np.uint8)
    mask[84:98, 0:12] = RBC
    cells = find_cells(mask, rbc_diameter_px=D).cells.by_class["rbc"]
    assert len(cells) == 1 and cells[0].bbox_px[1] + cells[0].bbox_px[3] == 100  # the box touches the bottom
    assert count_cells_field_edge(mask, rbc_diameter_px=D)["rbc"] == 1
    mask[98:100, 0:12] = RBC  # now its pixels reach the bottom row
    assert count_cells_field_edge(mask, rbc_diameter_px=D)["rbc"] == 0


def test_a_white_cell_sliver_on_the_border_counts_but_not_the_same_fragment_inside():
    mask = np.zeros((100, 160), np.uint8)
    mask[92:100, 20:30] = WBC  # 80 px (0.11 of a red cell) cut by the bottom edge: a white cell there
    mask[40:48, 80:90] = WBC  # the same fragment inside the frame is too small to be one
    assert count_cells(mask, rbc_diameter_px=D)["wbc"] == 1
    mask[96:100, 100:103] = WBC  # 12 px on the border (0.017): below even the border minimum
    assert count_cells(mask, rbc_diameter_px=D)["wbc"] == 1


def test_labels_are_consecutive_instances():
    mask = np.zeros((100, 160), np.uint8)
    disc(mask, 30, 50, D // 2, RBC)
    disc(mask, 54, 50, D // 2, RBC)
    labels = label_cells(mask, rbc_diameter_px=D)["rbc"]
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]
    assert np.all((labels > 0) == (mask == RBC))


@pytest.mark.parametrize("diameter", [20, 36, 60])
def test_red_cell_diameter_is_measured_from_a_mask(diameter):
    mask = np.zeros((400, 400), np.uint8)
    for i in range(4):
        disc(mask, 60 + 90 * i, 80, diameter // 2, RBC)
        disc(mask, 60 + 90 * i, 250, diameter // 2, RBC)
    assert abs(rbc_diameter_from_mask(mask) / diameter - 1) < 0.08


def test_counts_on_synthetic_smears_with_true_centres():
    """Generator masks with centre targets from the labeller: red-cell counts within 5 %."""
    for seed in (3, 4):
        smear = generate_smear(seed, 256, 320, um_per_px=0.25)
        boxes = boxes_from_instances(smear.instances, smear.mask)
        heat = centre_heatmap(boxes, smear.mask.shape)
        counts = count_cells(smear.mask, heat, rbc_diameter_px=7.5 / 0.25)
        assert abs(counts["rbc"] - smear.counts["rbc"]) <= max(1, 0.05 * smear.counts["rbc"])
        assert counts["wbc"] == smear.counts["wbc"]


def test_instance_labels_cover_whole_cells_so_the_field_edge_rule_sees_border_contact():
    big = 120  # red-cell diameter in px, as in a high-magnification frame
    mask = np.zeros((420, 480), np.uint8)
    disc(mask, 240, 300, 130, WBC)  # a large white cell cut by the bottom edge, its centre well inside
    disc(mask, 70, 70, big // 2, RBC)
    disc(mask, 170, 70, big // 2, RBC)  # two touching red cells, split without a centre head
    labels = label_cells(mask, rbc_diameter_px=big)
    assert (labels["wbc"] > 0).sum() == (mask == WBC).sum()
    assert (labels["rbc"] > 0).sum() == (mask == RBC).sum()
    assert labels["rbc"].max() == 2
    assert count_cells(mask, rbc_diameter_px=big)["wbc"] == 1
    assert count_cells_field_edge(mask, rbc_diameter_px=big)["wbc"] == 0


def test_two_white_cells_in_contact_that_the_peaks_miss_are_cut_at_their_notches():
    big = 60  # at this red-cell size neither 25-px disc reaches the 0.45-diameter peak depth
    mask = np.zeros((200, 260), np.uint8)
    disc(mask, 80, 100, 25, WBC)
    disc(mask, 136, 100, 25, WBC)
    mask[88:112, 80:136] = WBC  # joined by a neck: one region with two deep notches
    cv2.ellipse(mask, (130, 170), (40, 22), 20, 0, 360, WBC, -1)  # one elongated but convex cell
    labels = label_cells(mask, rbc_diameter_px=big)["wbc"]
    assert labels.max() == 3
    left, right = labels[100, 80], labels[100, 136]
    assert left > 0 and right > 0 and left != right
    assert (labels > 0).sum() == (mask == WBC).sum()


@pytest.mark.parametrize("k", [3, 5, 31, 105])
def test_disc_maxima_match_a_full_dilation(k):
    rng = np.random.default_rng(k)
    surface = cv2.GaussianBlur(rng.random((160, 200)).astype(np.float32), (0, 0), 4)
    surface[40:44, 60:64] = surface.max()  # a plateau
    where = surface >= np.percentile(surface, 30)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    expected = where & (surface >= cv2.dilate(surface, kernel) - 1e-6)
    assert expected.any()
    assert np.array_equal(_disc_maxima(surface, where, k), expected)


@pytest.mark.parametrize("points", [0, 1, 5, 40, 200])
@pytest.mark.parametrize("size", [1, 5, 9, 17])
def test_stamped_dilation_is_cv2_dilate(points, size):
    rng = np.random.default_rng(points * 100 + size)
    binary = np.zeros((60, 90), bool)
    binary[rng.integers(0, 60, points), rng.integers(0, 90, points)] = True
    binary[0, 0] = binary[59, 89] = points > 0  # at the corners: kernels cut by the border
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    assert np.array_equal(_dilated(binary, kernel), cv2.dilate(binary.view(np.uint8), kernel))


def test_touching_red_cells_part_along_the_centre_map_valley():
    """A large and a small red cell touching, and a third on the small one's other side: one label
    each, every label one connected region holding its own centre, all red pixels labelled; the
    large and small cell part where the centre heat-map is lowest between them (the flood by
    altitude), not halfway between their centres."""
    mask = np.zeros((120, 200), np.uint8)
    yy, xx = np.mgrid[:120, :200]
    heat = np.zeros((120, 200), np.float32)
    cells = ((60, 22), (94, 14), (120, 14))  # (x, radius), all on the row y = 60
    for x, r in cells:
        disc(mask, x, 60, r, RBC)
        heat = np.maximum(heat, np.exp(-((xx - x) ** 2 + (yy - 60) ** 2) / (2 * (0.5 * r) ** 2)).astype(np.float32))
    assert cv2.connectedComponents((mask == RBC).astype(np.uint8))[0] - 1 == 1  # one clump
    labels = label_cells(mask, heat, rbc_diameter_px=D)["rbc"]
    ids = [int(labels[60, x]) for x, _ in cells]
    assert sorted(ids) == [1, 2, 3]
    assert np.array_equal(labels > 0, mask == RBC)
    for i in ids:
        assert cv2.connectedComponents((labels == i).astype(np.uint8))[0] - 1 == 1
    row = labels[60, 60:94]
    boundary = 60 + int(np.argmax(row != ids[0])) - 0.5  # between the last big-cell and first small-cell pixel
    valley = 60 + int(np.argmin(heat[60, 60:94]))
    assert abs(boundary - valley) <= 1.5 and boundary > (60 + 94) / 2 + 2


def test_red_cells_on_the_coarse_grid_match_the_mask_grid():
    """rbc_grid_step 2 (the default) finds the same red cells as step 1 on a field of touching and
    lone cells with a centre map: the same count, every red pixel labelled, each cell's pixels
    nearly the same (IoU >= 0.9 with its step-1 twin); without a centre map both steps are one path."""
    rng = np.random.default_rng(7)
    mask = np.zeros((240, 320), np.uint8)
    yy, xx = np.mgrid[:240, :320]
    heat = np.zeros((240, 320), np.float32)
    for x, y in ((40, 40), (66, 44), (90, 40), (200, 60), (150, 150), (174, 160), (260, 200), (30, 200)):
        r = int(rng.integers(12, 17))
        disc(mask, x, y, r, RBC)
        heat = np.maximum(heat, np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * (0.5 * r) ** 2)).astype(np.float32))
    fine = label_cells(mask, heat, rbc_diameter_px=D, rules=CountRules(rbc_grid_step=1))["rbc"]
    coarse = label_cells(mask, heat, rbc_diameter_px=D)["rbc"]
    assert DEFAULT_RULES.rbc_grid_step == 2
    assert fine.max() == coarse.max() == 8
    assert np.array_equal(coarse > 0, mask == RBC)
    for i in range(1, 9):
        twin = np.bincount(fine[coarse == i]).argmax()
        a, b = coarse == i, fine == twin
        assert (a & b).sum() / (a | b).sum() >= 0.9
    no_centres = [label_cells(mask, None, rbc_diameter_px=D, rules=CountRules(rbc_grid_step=s))["rbc"] for s in (1, 2)]
    assert np.array_equal(*no_centres)


def test_white_cells_on_their_window_are_those_of_the_whole_frame():
    """White cells are worked on the rows and columns near them (far-apart cells brought closer),
    yet each is labelled as on the whole frame: a touching pair split, a cell cut by the border
    kept from a sliver, the lone ones whole; and their records, taken on the window, equal those
    of the full-size labels."""
    from runtime.analysis.cells import instance_stats
    from runtime.analysis.counting import _in_box, _white_cells, _window_reach

    mask = np.zeros((300, 420), np.uint8)
    for x, y in ((40, 40), (330, 60), (200, 250), (226, 250)):  # the last two touch
        disc(mask, x, y, 20, WBC)
    disc(mask, 419, 200, 10, WBC)  # a sliver on the right border (0.22 of a red cell: under wbc_min_area)
    d = 30.0
    area = np.pi * d * d / 4
    whole = _white_cells(mask == WBC, d, area, DEFAULT_RULES)
    window = _in_box(mask == WBC, lambda b: _white_cells(b, d, area, DEFAULT_RULES),
                     _window_reach(DEFAULT_RULES.wbc_peak_spacing * d))
    assert window.labels.size < mask.size / 2  # the empty stretches between cells were left out
    labels = window.on_mask(mask)
    assert labels.max() == whole.max() == 5
    pairs = set(zip(labels[labels > 0].tolist(), whole[whole > 0].tolist()))
    assert np.array_equal(labels > 0, whole > 0) and len(pairs) == 5  # the same cells, pixel for pixel
    prob = np.random.default_rng(3).random(mask.shape)
    on_window, full = window.stats(prob), instance_stats(labels, prob)
    for key in full:
        assert np.allclose(on_window[key], full[key]), key
