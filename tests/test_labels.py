"""The labeller: boxes -> ellipse masks, paint order, ignore ring, centre targets, Dice on synthetic smears."""

from __future__ import annotations

import math

import numpy as np

from runtime.contracts.classes import BACKGROUND, PLATELET, RBC, WBC
from runtime.inference.preprocess import IGNORE_INDEX
from training.labels import (
    boxes_from_instances,
    boxes_to_instances,
    boxes_to_mask,
    centre_heatmap,
    dice_per_class,
    labeller_dice_on_synthetic,
)
from training.txl_pbc import Box


def test_ellipse_is_inscribed_in_its_box():
    mask = boxes_to_mask([Box(RBC, 50, 40, 40, 20)], (80, 100))
    ys, xs = np.nonzero(mask == RBC)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (30, 70, 30, 50)
    assert abs((mask == RBC).sum() / (math.pi * 20 * 10) - 1) < 0.04


def test_rarer_class_wins_where_boxes_overlap():
    boxes = [Box(WBC, 40, 40, 30, 30), Box(RBC, 40, 40, 60, 60), Box(PLATELET, 62, 40, 14, 14)]
    mask = boxes_to_mask(boxes, (80, 80))
    assert mask[40, 40] == WBC  # white over red
    assert mask[40, 66] == PLATELET  # platelet over red (outside the white cell)
    assert mask[40, 54] == WBC  # white over platelet
    assert mask[15, 40] == RBC
    assert mask[0, 0] == BACKGROUND


def test_ignore_ring_marks_outlines_only():
    plain = boxes_to_mask([Box(RBC, 40, 40, 40, 40)], (80, 80))
    ringed = boxes_to_mask([Box(RBC, 40, 40, 40, 40)], (80, 80), ignore_ring_px=3)
    assert ringed[40, 40] == RBC and ringed[40, 20] == IGNORE_INDEX and ringed[5, 5] == BACKGROUND
    changed = ringed != plain
    assert np.all(ringed[changed] == IGNORE_INDEX)
    assert 0.05 < changed.sum() / (plain == RBC).sum() < 0.6


def test_ignore_ring_only_on_the_chosen_classes():
    boxes = [Box(RBC, 30, 40, 40, 40), Box(PLATELET, 70, 40, 12, 12)]
    plain = boxes_to_mask(boxes, (80, 100))
    ringed = boxes_to_mask(boxes, (80, 100), ignore_ring_px=2, ring_classes=(RBC,))
    assert (ringed[:, :52] == IGNORE_INDEX).any()  # the red cell's outline is skipped
    assert np.array_equal(ringed[:, 55:], plain[:, 55:])  # the platelet keeps its full extent
    assert (ringed[:, 55:] == PLATELET).sum() == (plain == PLATELET).sum() > 0


def test_centre_heatmap_has_one_peak_per_red_cell():
    boxes = [Box(RBC, 20, 20, 20, 20), Box(RBC, 38, 20, 20, 20), Box(WBC, 60, 60, 30, 30)]
    heat = centre_heatmap(boxes, (90, 90))
    assert heat[19, 19] > 0.95 and heat[19, 37] > 0.95
    assert heat[59, 59] < 0.01  # white cells have no centre target
    assert heat.max() <= 1.0


def test_instances_round_trip_to_boxes():
    boxes = [Box(RBC, 20.0, 20.0, 20.0, 16.0), Box(WBC, 60.0, 50.0, 30.0, 30.0), Box(PLATELET, 80.0, 15.0, 8.0, 8.0)]
    inst = boxes_to_instances(boxes, (90, 100))
    back = boxes_from_instances(inst, boxes_to_mask(boxes, (90, 100)))
    assert sorted(b.cls for b in back) == sorted(b.cls for b in boxes)
    for a in boxes:
        b = next(x for x in back if x.cls == a.cls)
        assert abs(a.cx - b.cx) <= 1 and abs(a.w - b.w) <= 1 and abs(a.h - b.h) <= 1


def test_dice_per_class_skips_ignored_pixels():
    truth = np.array([[1, 1, 255, 0]], np.uint8)
    pred = np.array([[1, 0, 2, 0]], np.uint8)
    assert dice_per_class(pred, truth) == [2 / 3, 2 / 3, 1.0, 1.0]


def test_labeller_dice_on_synthetic_smears():
    """Tight boxes around the generator's cells, through the labeller, against its exact masks."""
    dice = labeller_dice_on_synthetic(frames=3)
    assert dice["rbc"] > 0.9 and dice["wbc"] > 0.9 and dice["background"] > 0.95
    assert dice["platelet"] > 0.8
