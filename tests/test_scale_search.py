"""The inference plan: scale search refined by the measured red-cell size (corrected by the model's
fitted ratio), flip averaging of the final pass, the plan's card section and its fit at export."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from model_fixtures import tiny_model  # noqa: F401  (session fixture)
from runtime.contracts.errors import ConfigError, ModelError
from runtime.contracts.modelcard import card_path_for
from runtime.contracts.classes import BACKGROUND, PLATELET, RBC, WBC
from runtime.analysis.scale_search import grow_platelets, search_scale, segment_frame, white_cells_at_border
from runtime.contracts.card_sections import InferencePlan
from runtime.inference.passes import FunctionNetwork
from runtime.inference.preprocess import PreprocessParams, decide_scale, preprocess
from runtime.inference.model import SegmentationModel
from runtime.capture.synthetic import generate_smear

PARAMS = PreprocessParams(target_rbc_diameter_px=24.0, stride=16)


def test_plan_round_trips_and_refuses_bad_sections():
    plan = InferencePlan(measured_diameter_ratio=1.07, flip_average=True)
    assert InferencePlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert InferencePlan.from_dict(None) == InferencePlan()
    with pytest.raises(ConfigError, match="unknown key"):
        InferencePlan.from_dict({"ratio": 1.0})
    with pytest.raises(ConfigError, match="measured_diameter_ratio"):
        InferencePlan(measured_diameter_ratio=3.0)
    with pytest.raises(ConfigError, match="candidates"):
        InferencePlan(candidates=(2.0,))
    with pytest.raises(ConfigError, match="platelet_grow_px"):
        InferencePlan(platelet_grow_px=-1.0)
    with pytest.raises(ConfigError, match="wbc_border"):
        InferencePlan(wbc_border_min_prob=0.0)


def test_weak_white_cell_evidence_counts_only_near_the_frame_edge():
    scores = np.zeros((4, 50, 60), np.float32)
    scores[RBC] = 2.0  # red cell everywhere, white cell unlikely except where raised below
    scores[WBC, :, :] = -5.0
    scores[WBC, 20:30, 0:6] = 1.0  # softmax gives white 0.22 here: at the left edge
    scores[WBC, 20:30, 30:36] = 1.0  # the same evidence in the middle of the frame
    mask = scores.argmax(axis=0).astype(np.uint8)
    out = white_cells_at_border(mask, scores, band_px=8, min_prob=0.15)
    assert (out[20:30, 0:6] == WBC).all() and (out[20:30, 30:36] == RBC).all()
    assert (out[:20] == mask[:20]).all()
    assert white_cells_at_border(mask, scores, band_px=8, min_prob=0.3)[25, 2] == RBC
    assert white_cells_at_border(mask, scores, band_px=0, min_prob=0.15) is mask


def test_platelets_grow_into_plasma_only():
    mask = np.zeros((40, 60), np.uint8)
    cv2.circle(mask, (20, 20), 4, PLATELET, -1)
    mask[:, 26:] = RBC  # a red cell 2 px from the platelet's edge
    grown = grow_platelets(mask, 2.0)
    assert np.array_equal(grown[:, 26:], mask[:, 26:])  # never over another cell
    assert grown[20, 24:26].tolist() == [PLATELET, PLATELET] and grown[20, 14] == PLATELET
    assert grown[20, 13] == BACKGROUND and (grown == PLATELET).sum() > 1.5 * (mask == PLATELET).sum()
    assert grow_platelets(mask, 0.0) is mask


@pytest.mark.parametrize("radius", [0.5, 1.0, 1.5, 2.0, 2.2360679, 3.2327, 5.0990195, 7.3])
def test_platelet_growth_is_the_distance_transform_threshold(radius):
    """The bounded dilation turns exactly the plasma pixels whose exact Euclidean distance to a
    platelet is within the radius (the rule's definition) into platelet."""
    rng = np.random.default_rng(int(radius * 100))
    for trial in range(20):
        h, w = (int(v) for v in rng.integers(5, 120, 2))
        mask = rng.choice(4, size=(h, w), p=[0.85, 0.08, 0.04, 0.03]).astype(np.uint8)
        if trial % 4 == 0:
            mask[mask == PLATELET] = BACKGROUND
            mask[rng.integers(0, h), rng.integers(0, w)] = PLATELET
        distance = cv2.distanceTransform((mask != PLATELET).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        expected = mask.copy()
        expected[(mask == BACKGROUND) & (distance <= radius)] = PLATELET
        assert np.array_equal(grow_platelets(mask, radius), expected), (trial, radius)


def _position_dependent_run(tensor: np.ndarray) -> dict[str, np.ndarray]:
    """A stand-in network whose output depends on where a pixel is (not flip-equivariant)."""
    _, _, h, w = tensor.shape
    ramp = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :].repeat(h, 0)
    logits = np.stack([tensor[0, 0], tensor[0, 1] + ramp, tensor[0, 2], -tensor[0, 0]])[None]
    return {"logits": logits, "centres": (tensor[0, :1] + ramp)[None]}


def _pointwise_run(tensor: np.ndarray) -> dict[str, np.ndarray]:
    """A stand-in network that maps each pixel on its own: flipping commutes with it."""
    logits = np.concatenate([tensor, -tensor[:, :1]], axis=1)
    return {"logits": logits, "centres": tensor[:, 1:2] * 0.5}


def test_flip_average_is_the_mean_of_three_flipped_back_views():
    frame = generate_smear(3, 96, 128, 0.3).image
    prepared = preprocess(frame, PARAMS, um_per_px=0.3)
    network = FunctionNetwork(_pointwise_run, PARAMS)
    plain = network.predict(prepared)
    averaged = network.flip_averaged(plain)
    assert averaged.runs == 3
    np.testing.assert_allclose(averaged.logits, plain.logits, atol=1e-5)  # equivariant: unchanged
    np.testing.assert_allclose(averaged.heat, plain.heat, atol=1e-6)

    network = FunctionNetwork(_position_dependent_run, PARAMS)
    plain = network.predict(prepared)
    averaged = network.flip_averaged(plain)
    x = prepared.tensor
    views = [_position_dependent_run(x)["logits"][0],
             np.flip(_position_dependent_run(np.ascontiguousarray(np.flip(x, -1)))["logits"][0], -1),
             np.flip(_position_dependent_run(np.ascontiguousarray(np.flip(x, -2)))["logits"][0], -2)]
    np.testing.assert_allclose(averaged.logits, np.mean(views, axis=0), atol=1e-5)
    assert not np.allclose(averaged.logits, plain.logits)


def test_search_refines_by_the_corrected_measurement_and_ends_on_the_chosen_pass(tiny_model):
    model = SegmentationModel.load(tiny_model.int8)
    frame = generate_smear(11, 240, 280, 0.25).image
    first = model.predict(preprocess(frame, model.params, scale=decide_scale(model.params, frame)))
    for ratio in (0.9, 1.0, 1.15):
        model.plan = InferencePlan(measured_diameter_ratio=ratio, tolerance=0.02, refinements=3)
        plan = model.plan
        passes = search_scale(model, frame, first)
        refined = [p for p in passes if p.decision.source == "measured"]
        coarse = max(passes[:len(plan.candidates)], key=lambda p: p.confidence)
        assert passes[-1] in refined or passes[-1] is coarse
        if refined:  # each refinement ran at the previous pass's measurement divided by the ratio
            chain = [coarse, *refined]
            for before, after in zip(chain, chain[1:]):
                assert after.decision.rbc_diameter_px == pytest.approx(before.measured / ratio)
    model.plan = InferencePlan(flip_average=True)
    calibrated = segment_frame(model, frame, um_per_px=0.25)
    assert calibrated.passes == 1 and calibrated.scale.source == "calibration"  # one pass when calibrated
    model.plan = InferencePlan(flip_average=False, flip_when_calibrated=True)
    assert segment_frame(model, frame, um_per_px=0.25).passes == 3


def _fragments_run(tensor: np.ndarray) -> dict[str, np.ndarray]:
    """A stand-in network that sees red cells 7 grid px across at any scale (fragments)."""
    _, _, h, w = tensor.shape
    red = np.zeros((h, w), np.uint8)
    for y in range(10, h - 10, 20):
        for x in range(10, w - 10, 20):
            cv2.circle(red, (x, y), 3, 1, -1)
    logits = 5.0 * np.stack([1 - red, red, np.zeros_like(red), np.zeros_like(red)]).astype(np.float32)
    return {"logits": logits[None]}


@pytest.mark.parametrize("step", [2.0, 1.5])
def test_a_refinement_moves_the_scale_by_at_most_its_step(step):
    frame = generate_smear(5, 240, 280, 0.25).image
    network = FunctionNetwork(_fragments_run, PARAMS, InferencePlan(candidates=(1.0,), refinements=2, max_refinement_step=step))
    first = network.predict(preprocess(frame, PARAMS, scale=decide_scale(PARAMS, frame)))
    passes = search_scale(network, frame, first)
    chain = [first, *[p for p in passes if p.decision.source == "measured"]]
    assert len(chain) == 3
    for before, after in zip(chain, chain[1:]):
        assert before.measured / before.decision.rbc_diameter_px < 0.5  # the mask says: far smaller
        assert after.decision.rbc_diameter_px == pytest.approx(before.decision.rbc_diameter_px / step)
    with pytest.raises(ConfigError, match="max_refinement_step"):
        InferencePlan(max_refinement_step=0.5)


def test_export_fits_the_ratio_and_the_runtime_reads_it(tiny_model, tmp_path):
    card = json.loads(card_path_for(tiny_model.int8).read_text())
    ratio = card["inference"]["measured_diameter_ratio"]
    assert 0.5 <= ratio <= 2.0 and ratio != 1.0  # fitted, not the default
    assert card["inference_fit"]["frames"] == 8 and card["inference_fit"]["data"]["name"] == "synthetic"
    assert SegmentationModel.load(tiny_model.int8).plan.measured_diameter_ratio == ratio
    by_grow = card["inference_fit"]["platelet_dice_by_grow_px"]  # the growth is the best one tried
    assert by_grow[f"{card['inference']['platelet_grow_px']:g}"] == max(by_grow.values())

    import shutil

    copy = tmp_path / tiny_model.int8.name
    shutil.copy(tiny_model.int8, copy)
    card["inference"]["typo"] = 1
    card_path_for(copy).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="unknown key"):
        SegmentationModel.load(copy)


def test_device_config_can_override_flip_averaging(tiny_model):
    from runtime.contracts.config import config_from_dict as parse_config
    from runtime.device.loop import ModelHolder
    from runtime.inference.session import SessionOptions

    assert SegmentationModel.load(tiny_model.int8).plan.flip_average is False  # as its card says
    config = parse_config({"device_id": "scope-t", "model": {"path": str(tiny_model.int8), "flip_average": True}})
    holder = ModelHolder(config.model.path, SessionOptions(providers=("cpu",)), config.model.flip_average)
    assert holder.get().plan.flip_average is True
    with pytest.raises(ConfigError, match="model.flip_average"):
        parse_config({"device_id": "scope-t", "model": {"flip_average": "often"}})


def test_coarse_choice_never_prefers_a_pass_that_saw_no_red_cell():
    """Regression: shown cells at a quarter of their size, the network is confidently all plasma;
    that pass used to win the coarse search and the frame came out empty."""
    from runtime.analysis.scale_search import coarse_choice
    from runtime.inference.passes import NetworkPass

    prepared = preprocess(generate_smear(1, 64, 64, 0.3).image, PARAMS, um_per_px=0.3)
    logits = np.zeros((4, 64, 64), np.float32)
    saw_cells = NetworkPass(prepared, logits, None, measured=60.0, confidence=0.86)
    saw_plasma = NetworkPass(prepared, logits, None, measured=None, confidence=0.93)
    sharper = NetworkPass(prepared, logits, None, measured=70.0, confidence=0.90)
    assert coarse_choice([saw_cells, saw_plasma]) is saw_cells
    assert coarse_choice([saw_cells, saw_plasma, sharper]) is sharper
    assert coarse_choice([saw_plasma]) is saw_plasma
