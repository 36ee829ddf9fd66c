"""The one preprocessing: geometry, inverse mapping, parameters round trip, scale decisions, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.contracts.errors import ConfigError, ImageError
from runtime.inference.preprocess import (
    IGNORE_INDEX,
    PreprocessParams,
    decide_scale,
    mask_to_frame,
    mask_to_network,
    plan_geometry,
    preprocess,
    scores_to_frame,
)


def test_params_round_trip_through_dict():
    params = PreprocessParams(target_rbc_diameter_px=32.0, intensity="per_image", mean=(0.1, 0.2, 0.3))
    assert PreprocessParams.from_dict(params.to_dict()) == params


def test_params_reject_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="unknown key"):
        PreprocessParams.from_dict({"colour": "RGB"})
    with pytest.raises(ConfigError, match="stride"):
        PreprocessParams(stride=12)


def test_geometry_pads_to_stride_and_mask_maps_back():
    params = PreprocessParams(stride=16)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, size=(101, 77, 3), dtype=np.uint8)
    prepared = preprocess(frame, params, rbc_diameter_px=40.0)  # scale 1
    assert prepared.tensor.shape == (1, 3, 112, 80)
    assert prepared.tensor.dtype == np.float32
    mask = rng.integers(0, 4, size=(101, 77), dtype=np.uint8)
    net = mask_to_network(mask, prepared.geometry)
    assert net.shape == (112, 80)
    assert (net[101:, :] == IGNORE_INDEX).all() and (net[:, 77:] == IGNORE_INDEX).all()
    assert np.array_equal(mask_to_frame(net, prepared.geometry), mask)


def test_scaling_uses_calibration_then_measurement():
    params = PreprocessParams(target_rbc_diameter_px=40.0, nominal_rbc_diameter_um=7.5)
    by_cal = decide_scale(params, um_per_px=0.1)  # 75 px cells -> 40 px
    assert by_cal.source == "calibration" and by_cal.scale == pytest.approx(40 / 75)
    by_size = decide_scale(params, rbc_diameter_px=80.0)
    assert by_size.source == "measured" and by_size.scale == pytest.approx(0.5)
    geometry = plan_geometry((480, 640), by_size.scale, 16)
    assert geometry.resized_hw == (240, 320) and geometry.padded_hw == (240, 320)


def test_scores_map_back_to_frame_size():
    geometry = plan_geometry((100, 60), 0.5, 16)
    scores = np.zeros((4, *geometry.padded_hw), np.float32)
    scores[1] = 1.0
    out = scores_to_frame(scores, geometry)
    assert out.shape == (4, 100, 60)
    assert (out.argmax(0) == 1).all()


def test_rgb_order_and_fixed_normalisation():
    params = PreprocessParams(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), stride=1)
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[:, :, 0] = 255  # blue in OpenCV's BGR
    t = preprocess(frame, params, rbc_diameter_px=40.0).tensor
    assert np.allclose(t[0, 2], 1.0) and np.allclose(t[0, 0], 0.0)  # blue is the last RGB channel


@pytest.mark.parametrize(
    "shape, message",
    [((64, 64), "1 channel"), ((64, 64, 4), "4 channels"), ((8, 8, 3), "smaller than the network stride")],
)
def test_bad_frames_give_clear_errors(shape, message):
    with pytest.raises(ImageError, match=message):
        preprocess(np.zeros(shape, np.uint8), PreprocessParams(stride=16), rbc_diameter_px=40.0)
