"""Where training crops come from: a crop centred where a sampler asks, and petroscope's class-balanced
placement (`train segmentation --sampler petroscope`, training/balanced_crops.py)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from runtime.contracts.classes import PLATELET, RBC, WBC
from runtime.contracts.errors import ConfigError
from runtime.inference.preprocess import PreprocessParams
from training.txl_crops import Augment, CachedImage, make_crop
from training.txl_pbc import Box

PARAMS = PreprocessParams(target_rbc_diameter_px=32.0, stride=16)
needs_petroscope = pytest.mark.skipif(
    importlib.util.find_spec("petroscope") is None,
    reason="petroscope is not installed (it comes with the [train] extra: pip install -e '.[train]')")


def _frame(index: int, platelets: bool, size: int = 220) -> CachedImage:
    """A cached frame (red cells 45 px across, as the cache holds them): red cells on a grid, one white
    cell, and with `platelets` two platelets in one corner."""
    rng = np.random.default_rng(index)
    image = rng.integers(150, 220, size=(size, size, 3), dtype=np.uint8)
    boxes = [Box(RBC, float(x), float(y), 45.0, 45.0) for y in range(30, size - 20, 55) for x in range(30, size - 20, 55)]
    boxes.append(Box(WBC, 110.0, 110.0, 80.0, 80.0))
    if platelets:
        boxes += [Box(PLATELET, 190.0, 25.0, 12.0, 12.0), Box(PLATELET, 175.0, 35.0, 12.0, 12.0)]
    return CachedImage(f"frame{index:02d}", image, boxes)


def test_a_crop_is_centred_on_the_point_asked_for():
    item = CachedImage("one", np.full((280, 280, 3), 200, np.uint8), [Box(PLATELET, 80.0, 200.0, 14.0, 14.0)])
    rng = np.random.default_rng(0)
    _, mask, _ = make_crop(item, PARAMS, 64, rng, Augment.none(), centre=(200.0, 80.0))
    assert mask[32, 32] == PLATELET and mask[0, 0] == 0
    _, corner, _ = make_crop(item, PARAMS, 64, rng, Augment.none(), centre=(0.0, 279.0))  # clamped into the frame
    assert corner.shape == (64, 64) and (corner != 255).all()


def test_a_missing_petroscope_is_a_clear_error(monkeypatch):
    from training import balanced_crops

    monkeypatch.setattr(balanced_crops.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"\[train\] extra"):
        balanced_crops.import_balancer()


@needs_petroscope
def test_petroscope_places_crops_on_the_rare_class_reproducibly(tmp_path):
    from training.balanced_crops import BalancedCrops

    items = [_frame(i, platelets=i in (3, 8)) for i in range(12)]
    first = BalancedCrops(items, PARAMS, 64, tmp_path / "files", seed=1)
    places = [first.next_place() for _ in range(200)]
    on_platelet_frames = np.mean([index in (3, 8) for index, _ in places])
    assert on_platelet_frames > 0.5  # 2 of 12 frames: 0.17 if drawn evenly
    assert all(-1 <= y <= 220 and -1 <= x <= 220 for _, (y, x) in places)
    again = BalancedCrops(items, PARAMS, 64, tmp_path / "files", seed=1)  # files reused, same draws
    assert [again.next_place() for _ in range(200)] == places
    images, masks, heat = first.batch(np.random.default_rng(0), 4)
    assert tuple(images.shape) == (4, 3, 64, 64) and tuple(masks.shape) == tuple(heat.shape) == (4, 64, 64)
    assert (masks == 255).any()  # the ignore ring of the default augmentation
    assert first.describe()["sampler"]["name"] == "petroscope"


def test_petroscope_sampler_refuses_synthetic_data(cli_runner, tmp_path):
    from smearscope.cli import cli

    result = cli_runner.invoke(cli, ["train", "segmentation", "--data", "synthetic", "--out", str(tmp_path / "run"),
                                     "--steps", "1", "--sampler", "petroscope"])
    assert result.exit_code == 2 and "TXL-PBC" in result.output


@pytest.mark.slow
@needs_petroscope
def test_train_with_petroscope_sampler_and_holdout(cli_runner, tmp_path, shared_data):
    """A one-step run: trains on the first 8 train frames, validates on the 1,000 after them, never reads val."""
    from smearscope.cli import cli
    from training.checkpoint import load_checkpoint

    out = tmp_path / "run"
    result = cli_runner.invoke(cli, ["train", "segmentation", "--data", str(shared_data / "txl_pbc"), "--out", str(out),
                                     "--steps", "1", "--sampler", "petroscope", "--holdout", "1000", "--val-images", "2",
                                     "--base-width", "4", "--depth", "2", "--crop", "64", "--threads", "1",
                                     "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "on 8 txl_pbc frames (validation: 2 of 1000 held-out train)" in result.output
    data = load_checkpoint(out / "best.pt").training_data
    assert data["train"]["sampler"]["name"] == "petroscope" and data["train"]["frames"] == 8
    assert data["val"]["split"] == "train" and data["val"]["part"] == "held out"
    assert len(list((tmp_path / "cache").glob("petroscope-*/masks/*.png"))) == 8
    json.dumps(data)  # recorded in the card as it is
