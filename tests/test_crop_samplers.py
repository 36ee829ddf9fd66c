"""Where training crops come from: a crop centred where a sampler asks, and petroscope's class-balanced
placement (benchmarks/petroscope_sampler.py, the second arm of benchmarks/sampler_comparison.py)."""

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
    reason="petroscope is not installed (only the sampler comparison uses it: pip install petroscope==0.0.12)")


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
    from benchmarks import petroscope_sampler

    monkeypatch.setattr(petroscope_sampler.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install petroscope==0\.0\.12"):
        petroscope_sampler.import_balancer()


@needs_petroscope
def test_petroscope_places_crops_on_the_rare_class_reproducibly(tmp_path):
    from benchmarks.petroscope_sampler import BalancedCrops

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


def test_holdout_refuses_synthetic_data(cli_runner, tmp_path):
    from smearscope.cli import cli

    result = cli_runner.invoke(cli, ["train", "segmentation", "--data", "synthetic", "--out", str(tmp_path / "run"),
                                     "--steps", "1", "--holdout", "10"])
    assert result.exit_code == 2 and "TXL-PBC" in result.output


def test_comparison_recipe_is_the_train_commands_defaults():
    """Both arms of the comparison must train as `smearscope train segmentation` does by default."""
    from benchmarks.sampler_comparison import Recipe
    from smearscope.cli.train import ARCH_DEFAULTS, segmentation

    defaults = {p.name: p.default for p in segmentation.params}
    r = Recipe()
    assert r.arch == defaults["arch"] and ARCH_DEFAULTS[r.arch] == {"base_width": r.base_width, "depth": r.depth}
    ours = (r.centre_head, r.target_rbc_px, r.crop, r.batch_size, r.lr, r.weight_decay, tuple(r.class_weights),
            r.centre_weight, r.ignore_ring, r.val_images)
    theirs = tuple(defaults[k] for k in ("centre_head", "target_rbc_px", "crop", "batch_size", "lr", "weight_decay",
                                         "class_weights", "centre_weight", "ignore_ring", "val_images"))
    assert ours == tuple(tuple(v) if isinstance(v, list) else v for v in theirs)
    assert defaults["ring_classes"] == ",".join(Augment().ring_classes)


@pytest.mark.slow
@needs_petroscope
def test_petroscope_arm_trains_on_the_rest_and_validates_on_the_held_out_frames(tmp_path, shared_data):
    """One step of the comparison's petroscope arm on the first 8 train frames, validated on the 1,000 after them."""
    from benchmarks.sampler_comparison import Comparison, Recipe, train_one
    from training.checkpoint import load_checkpoint

    c = Comparison(shared_data / "txl_pbc", tmp_path, steps=1, holdout=1000,
                   recipe=Recipe(base_width=4, depth=2, crop=64, val_images=2))
    result = train_one(c, "petroscope")
    assert result.steps == 1 and result.history[0]["step"] == 1
    data = load_checkpoint(result.best).training_data
    assert data["train"]["sampler"]["name"] == "petroscope" and data["train"]["frames"] == 8
    assert data["val"]["split"] == "train" and data["val"]["part"] == "held out" and data["val"]["frames"] == 1000
    assert len(list((tmp_path / "cache").glob("petroscope-*/masks/*.png"))) == 8
    json.dumps(data)  # recorded in the card as it is
