"""One frame, three paths, identical tensors: the training dataset (augmentation off), the int8
calibration reader and the device's runtime.inference.preprocess.preprocess."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from export.quantize import ImageFrame, PreprocessedFrames
from runtime.inference.preprocess import PreprocessParams, mask_to_network, preprocess
from runtime.capture.synthetic import generate_smear
from training.datasets import SegmentationDataset, SyntheticSource


@pytest.mark.parametrize(
    "params,scale_info",
    [
        (PreprocessParams(), "um_per_px"),
        (PreprocessParams(target_rbc_diameter_px=24.0, intensity="per_image", color_order="BGR"), "rbc_diameter_px"),
        (PreprocessParams(target_rbc_diameter_px=32.0), "estimated"),
    ],
)
def test_training_calibration_and_runtime_tensors_are_identical(params, scale_info):
    source = SyntheticSource(count=1, split="val", height=203, width=250)  # odd size: padding matters
    sample = source[0]
    if scale_info == "rbc_diameter_px":
        sample = dataclasses.replace(sample, um_per_px=None, rbc_diameter_px=7.5 / sample.um_per_px)
    elif scale_info == "estimated":
        sample = dataclasses.replace(sample, um_per_px=None)
    source._cache[0] = sample  # the dataset reads this sample

    training = SegmentationDataset(source, params, augment=None, crop=None)[0]
    calibration = PreprocessedFrames([sample], params).tensors[0]
    runtime = preprocess(
        sample.image.copy(), params,
        um_per_px=sample.um_per_px if scale_info == "um_per_px" else None,
        rbc_diameter_px=sample.rbc_diameter_px if scale_info == "rbc_diameter_px" else None,
    )

    assert calibration.shape == runtime.tensor.shape and runtime.tensor.shape[0] == 1
    assert np.array_equal(training["image"].numpy(), runtime.tensor[0])
    assert np.array_equal(calibration, runtime.tensor)
    # The training target sits on the same grid as the tensor.
    assert np.array_equal(training["mask"].numpy(), mask_to_network(sample.mask, runtime.geometry))
    assert training["mask"].shape == runtime.tensor.shape[2:]


def test_image_folder_calibration_frames_match_runtime(tmp_path):
    from runtime.contracts.imageio import read_image, write_image

    smear = generate_smear(9, 160, 200, um_per_px=0.25)
    write_image(tmp_path / "frame.png", smear.image)
    params = PreprocessParams()
    from export.quantize import frames_from_folder

    frames = frames_from_folder(tmp_path, 4, um_per_px=0.25)
    assert len(frames) == 1 and isinstance(frames[0], ImageFrame)
    expected = preprocess(read_image(tmp_path / "frame.png"), params, um_per_px=0.25).tensor
    assert np.array_equal(PreprocessedFrames(frames, params).tensors[0], expected)


def test_augmentation_changes_the_tensor_only_when_asked():
    from training.datasets import Augment

    params = PreprocessParams(target_rbc_diameter_px=24.0)
    source = SyntheticSource(count=1, height=128, width=128)
    plain = SegmentationDataset(source, params)[0]["image"].numpy()
    augmented = SegmentationDataset(source, params, augment=Augment(), seed=3)[0]["image"].numpy()
    again = SegmentationDataset(source, params, augment=Augment(), seed=3)[0]["image"].numpy()
    assert not np.array_equal(plain, augmented) and np.array_equal(augmented, again)
