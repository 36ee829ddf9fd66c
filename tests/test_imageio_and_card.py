"""Image files and model cards: every bad input names the file and the problem."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.contracts.errors import ImageError, ModelError, ModelIntegrityError
from runtime.contracts.imageio import read_image
from runtime.contracts.modelcard import ModelCard, load_card, sha256_file
from runtime.inference.preprocess import PreprocessParams


def test_read_image_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png: file is empty"):
        read_image(empty)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageError, match="corrupt.jpg: not a readable image"):
        read_image(corrupt)
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.zeros((32, 32), np.uint8))
    with pytest.raises(ImageError, match="grey.png: image has 1 channel"):
        read_image(grey)
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), np.zeros((32, 32, 4), np.uint8))
    with pytest.raises(ImageError, match="rgba.png: image has 4 channels"):
        read_image(rgba)
    with pytest.raises(ImageError, match="does not exist"):
        read_image(tmp_path / "missing.png")


def _card_for(model_path, sha):
    return ModelCard(
        name="m", version="1", sha256=sha, task="segmentation", classes=["a"], input_name="x",
        input_shape=[1, 3, "h", "w"], output_names=["y"], opset=17, preprocess=PreprocessParams(),
    )


def test_card_round_trip_and_hash_check(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model-bytes")
    card = _card_for(model, sha256_file(model))
    card.write(tmp_path / "m.json")
    loaded = load_card(model)
    assert loaded.preprocess == PreprocessParams() and loaded.sha256 == card.sha256
    model.write_bytes(b"tampered")
    with pytest.raises(ModelIntegrityError, match="m.onnx: sha256 .* does not match its card"):
        load_card(model)


def test_missing_card_is_a_model_error(tmp_path):
    model = tmp_path / "lonely.onnx"
    model.write_bytes(b"x")
    with pytest.raises(ModelError, match="no model card"):
        load_card(model)
