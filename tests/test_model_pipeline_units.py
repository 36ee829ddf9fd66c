"""Building blocks of the model pipeline: model registry, U-Net shapes, metrics, losses,
datasets, checkpoints and a short resumable training run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from runtime.contracts.classes import CLASS_NAMES, PLATELET, RBC, WBC
from runtime.contracts.errors import ConfigError, DataError, ModelError
from runtime.inference.preprocess import IGNORE_INDEX, PreprocessParams
from training.datasets import Augment, SegmentationDataset, SyntheticSource, augment_sample, build_source
from training.metrics import ConfusionMeter, confusion_counts, dice_iou, mean_dice
from training.unet import UNet, build_model

torch.set_num_threads(1)
PARAMS = PreprocessParams(target_rbc_diameter_px=24.0)


def test_registry_lists_valid_names_on_a_bad_one():
    with pytest.raises(ConfigError, match="valid: lite_unet, unet"):
        build_model("segnet")
    with pytest.raises(ConfigError, match="unet"):
        build_model("unet", widht=3)
    with pytest.raises(ConfigError, match="depth"):
        UNet(depth=0)


def test_unet_shapes_centre_head_and_no_transposed_convolution():
    model = build_model("unet", base_width=4, depth=3, centre_head=True).eval()
    logits, centres = model(torch.zeros(2, 3, 48, 64))
    assert logits.shape == (2, 4, 48, 64) and centres.shape == (2, 1, 48, 64)
    assert model.output_names == ["logits", "centres"] and model.stride == 8
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())
    plain = build_model("unet", base_width=4, depth=2, upsample="bilinear").eval()
    assert plain(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 32, 32)


def test_lite_unet_stem_stride_four_works_at_a_quarter_scale_and_leaves_stride_two_as_it_was():
    two = build_model("lite_unet", base_width=4, depth=2, centre_head=True).eval()
    four = build_model("lite_unet", base_width=8, depth=2, centre_head=True, stem_stride=4).eval()
    assert two.stride == 8 and four.stride == 16
    assert "stem_stride" not in two.config and four.config["stem_stride"] == 4
    # the trained models' checkpoints load: a stride-2 stem keeps its layers' names
    assert [k for k in two.state_dict() if k.startswith("stem.")][:2] == ["stem.0.weight", "stem.1.weight"]
    assert "stem.3.weight" in two.state_dict() and "stem.6.weight" not in two.state_dict()
    logits, centres = four(torch.zeros(1, 3, 64, 96))
    assert logits.shape == (1, 4, 64, 96) and centres.shape == (1, 1, 64, 96)
    first, second = (m for m in four.stem if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2))
    assert first.out_channels == 4 and second.out_channels == 8
    with pytest.raises(ConfigError, match="stem_stride"):
        build_model("lite_unet", stem_stride=3)


def test_dice_and_iou_from_confusion_counts():
    truth = np.array([[0, 1, 1, 2], [3, 3, IGNORE_INDEX, 0]])
    pred = np.array([[0, 1, 0, 2], [3, 1, 2, 0]])
    counts = confusion_counts(pred, truth)
    assert counts.sum() == 7  # the ignored pixel is not counted
    scores = dice_iou(counts)
    assert scores["rbc"]["dice"] == pytest.approx(2 * 1 / (2 + 2))  # tp 1, fp 1 (from 3), fn 1 (to 0)
    assert scores["rbc"]["iou"] == pytest.approx(1 / 3)
    assert scores["wbc"]["dice"] == 1.0
    assert scores["platelet"]["dice"] == pytest.approx(2 / 3)
    meter = ConfusionMeter()
    meter.update(np.zeros((2, 2)), np.zeros((2, 2)))
    empty = meter.scores()
    assert empty["background"]["dice"] == 1.0 and empty["rbc"]["dice"] is None
    assert mean_dice(scores) == pytest.approx(np.mean([0.5, 1.0, 2 / 3]))


def test_loss_prefers_the_right_answer_and_skips_ignored_pixels():
    from training.losses import SegmentationLoss, centre_heatmap_loss

    target = torch.tensor([[[0, 1], [2, 3]]])
    good = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float() * 10
    bad = good.roll(1, dims=1)
    loss = SegmentationLoss(class_weights=[0.5, 1, 1, 3])
    assert loss(good, target) < 0.1 < loss(bad, target)
    ignored = torch.full_like(target, IGNORE_INDEX)
    ignored[0, 0, 0] = 0
    assert loss(good, ignored) < 0.1
    heat = torch.zeros(1, 8, 8)
    heat[0, 4, 4] = 1.0
    peak = torch.full((1, 1, 8, 8), -6.0)
    peak[0, 0, 4, 4] = 6.0
    assert centre_heatmap_loss(peak, heat) < 0.01 < centre_heatmap_loss(-peak, heat)
    # Missing the one peak costs more than one false peak on plasma (peaks weigh ten times more).
    missed, extra = peak.clone(), peak.clone()
    missed[0, 0, 4, 4] = -6.0
    extra[0, 0, 1, 1] = 6.0
    assert centre_heatmap_loss(missed, heat) > 5 * centre_heatmap_loss(extra, heat)


def test_sources_registry_and_errors(tmp_path):
    with pytest.raises(ConfigError, match="valid: synthetic, txl_pbc"):
        build_source("nope")
    with pytest.raises(DataError, match="does not exist"):
        build_source("txl_pbc", tmp_path / "missing", "train")
    train, val = build_source("synthetic", None, "train", count=2), build_source("synthetic", None, "val", count=2)
    assert not np.array_equal(train[0].image, val[0].image)
    assert train.describe()["split"] == "train"


def test_augmentation_keeps_labels_on_their_pixels():
    sample = SyntheticSource(count=1, height=96, width=128)[0]
    rng = np.random.default_rng(5)
    for _ in range(6):
        out = augment_sample(sample, Augment(colour=0.0, gamma=0.0), rng)
        # Flips/rotations are exact permutations of pixels: each pixel keeps its colour-and-label pair.
        pairs = lambda s: sorted(map(tuple, np.c_[s.image.reshape(-1, 3), s.mask.reshape(-1, 1)]))  # noqa: E731
        assert out.image.shape[:2] == out.mask.shape == out.instances.shape
        assert pairs(out) == pairs(sample)


def test_dataset_crops_targets_and_centres():
    source = SyntheticSource(count=2, height=100, width=90)
    ds = SegmentationDataset(source, PARAMS, augment=Augment(), crop=64, centres=True)
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (64, 64)
    assert item["mask"].dtype == torch.int64 and bool(item["has_centres"])
    labels = set(item["mask"].unique().tolist())
    assert labels <= {0, RBC, WBC, PLATELET, IGNORE_INDEX}
    assert item["centres"].max() > 0.9  # at least one red-cell peak
    with pytest.raises(ConfigError, match="multiple of the stride"):
        SegmentationDataset(source, PARAMS, crop=50)


def test_corrupt_missing_and_foreign_checkpoints(tmp_path):
    from training.checkpoint import load_checkpoint

    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ModelError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ModelError, match="not a smearscope checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_training_writes_checkpoints_and_resumes(tmp_path):
    from training.checkpoint import load_checkpoint
    from training.datasets import DatasetCrops
    from runtime.contracts.modelcard import sha256_file
    from training.loop import TrainConfig, TrainingRun, train_segmentation

    spec = {"name": "unet", "kwargs": {"base_width": 4, "depth": 2}}
    train = DatasetCrops(SegmentationDataset(SyntheticSource(count=4, height=96, width=96), PARAMS,
                                             augment=Augment(), crop=64))
    val = SegmentationDataset(SyntheticSource(count=2, split="val", height=96, width=96), PARAMS)
    lines: list[str] = []

    def config(steps: int) -> TrainConfig:
        return TrainConfig(steps=steps, batch_size=2, threads=1, val_every_min=None, val_every_steps=2)

    first = train_segmentation(spec, PARAMS, train, val, config(2), TrainingRun(tmp_path, log=lines.append))
    assert first.best.is_file() and first.last.is_file() and len(first.history) == 1 and first.steps == 2
    assert lines and "val mean Dice" in lines[0] and all(name in lines[0] for name in CLASS_NAMES)
    ckpt = load_checkpoint(first.last)
    assert ckpt.raw["step"] == 2 and ckpt.preprocess == PARAMS
    assert set(ckpt.metrics["val"]["per_class"]) == set(CLASS_NAMES)
    resumed = train_segmentation(spec, PARAMS, train, val, config(4),
                                 TrainingRun(tmp_path, resume=first.last, log=lines.append))
    assert [r["step"] for r in resumed.history] == [2, 4]
    assert load_checkpoint(resumed.last).raw["step"] == 4
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ConfigError, match="trained as"):
        train_segmentation({"name": "unet", "kwargs": {"base_width": 8, "depth": 2}}, PARAMS, train, val,
                           config(6), TrainingRun(tmp_path, resume=first.last))
    # a fine-tune starts a new schedule from the weights and records where they came from
    tuned = train_segmentation(spec, PARAMS, train, val, config(2), TrainingRun(tmp_path / "ft", init=first.last))
    init = load_checkpoint(tuned.last).raw["init"]
    assert tuned.steps == 2 and init == {"file": "last.pt", "sha256": sha256_file(first.last)}
    assert load_checkpoint(first.last).raw["init"] is None
    with pytest.raises(ConfigError, match="budget"):
        TrainConfig()


def test_schedule_warms_up_then_decays_over_the_budget():
    from training.loop import TrainConfig

    config = TrainConfig(steps=1000, minutes=10.0, lr=1.0, warmup=0.1)
    assert config.budget_fraction(100, 0.0) == pytest.approx(0.1)
    assert config.budget_fraction(100, 300.0) == pytest.approx(0.5)  # time ran out faster than steps
    assert config.budget_fraction(5000, 0.0) == 1.0
    assert config.learning_rate(0.05) == pytest.approx(0.5 * 0.5 * (1 + np.cos(np.pi * 0.05)))
    assert config.learning_rate(0.1) > config.learning_rate(0.5) > config.learning_rate(0.99) > 0


def test_cached_crops_favour_platelet_images_and_match_the_network_grid():
    from training.txl_crops import Augment as CropAugment, CachedCrops, CachedImage
    from training.txl_pbc import Box

    image = np.full((120, 120, 3), 200, np.uint8)
    plain = CachedImage("plain", image, [Box(RBC, 60, 60, 45, 45)])
    with_platelet = CachedImage("plt", image, [Box(RBC, 60, 60, 45, 45), Box(PLATELET, 20, 20, 12, 12)])
    crops = CachedCrops([plain, with_platelet], PARAMS, 64, augment=CropAugment.none())
    assert crops.sampling.tolist() == pytest.approx([1 / 3, 2 / 3])
    x, y, heat = crops.batch(np.random.default_rng(0), 3)
    assert x.shape == (3, 3, 64, 64) and y.shape == (3, 64, 64) and heat.shape == (3, 64, 64)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    with pytest.raises(ConfigError, match="multiple of the stride"):
        CachedCrops([plain], PARAMS, 50)
    with pytest.raises(DataError, match="no cached training images"):
        CachedCrops([], PARAMS, 64)


def test_cached_crop_rings_only_the_chosen_classes():
    from training.txl_crops import Augment as CropAugment, CachedImage, make_crop
    from training.txl_pbc import Box

    item = CachedImage("x", np.full((96, 96, 3), 200, np.uint8),  # the crop is the whole image
                       [Box(RBC, 35, 48, 50, 50), Box(PLATELET, 80, 48, 16, 16)])
    ringed = CropAugment(scale_range=(1.4, 1.4), flip=False, colour_jitter=0.0, ignore_ring_px=2,
                         ring_classes=("rbc", "wbc"))
    _, mask, _ = make_crop(item, PARAMS, 96, np.random.default_rng(0), ringed)
    _, plain, _ = make_crop(item, PARAMS, 96, np.random.default_rng(0), dataclasses.replace(ringed, ignore_ring_px=0))
    assert (mask == 255).any()
    assert (mask == PLATELET).sum() == (plain == PLATELET).sum() > 0  # no platelet pixel skipped
    with pytest.raises(ConfigError, match="unknown plasma"):
        CropAugment(ring_classes=("rbc", "plasma"))


def test_real_smear_source_through_the_dataset(shared_data):
    """The registry's txl_pbc source feeds the same dataset path (train split only)."""
    source = build_source("txl_pbc", shared_data / "txl_pbc", "train")
    assert len(source) > 100 and source.describe()["split"] == "train"
    item = SegmentationDataset(source, PreprocessParams(), augment=Augment(), crop=128, centres=True)[0]
    assert item["image"].shape == (3, 128, 128) and bool(item["has_centres"])
    assert set(item["mask"].unique().tolist()) & {RBC, WBC, PLATELET}
