"""Camera sources: reproducible synthetic frames, folder order and drop-outs, OpenCV reconnects."""

from __future__ import annotations

import shutil
import time

import cv2
import numpy as np
import pytest

from runtime.capture.cameras import CameraDisconnected, FolderCamera, OpenCVCamera, SyntheticCamera, make_camera
from runtime.contracts.config import FolderCameraConfig, OpenCVCameraConfig, SyntheticCameraConfig
from runtime.contracts.errors import ImageError, SkipCapture


def test_synthetic_camera_is_reproducible_and_carries_truth():
    config = SyntheticCameraConfig(seed=7, width=160, height=120)
    a, b = SyntheticCamera(config), SyntheticCamera(config)
    first, again = a.capture(), b.capture()
    assert np.array_equal(first.image, again.image)
    assert first.image.shape == (120, 160, 3) and first.um_per_px == config.um_per_px
    second = a.capture()
    assert not np.array_equal(first.image, second.image)
    assert first.truth["seed"] == 7 and second.truth["seed"] == 8
    assert set(first.truth["counts"]) == {"rbc", "wbc", "platelet"}


def _write(path, value):
    cv2.imwrite(str(path), np.full((40, 50, 3), value, np.uint8))


def test_folder_camera_order_loop_and_corrupt_file(tmp_path):
    _write(tmp_path / "a.png", 10)
    (tmp_path / "b.png").write_bytes(b"not a png at all")
    _write(tmp_path / "c.png", 30)
    (tmp_path / "notes.txt").write_text("ignored")
    camera = FolderCamera(FolderCameraConfig(path=str(tmp_path)))
    assert camera.capture().image.mean() == 10
    with pytest.raises(ImageError, match=r"b\.png: not a readable image"):
        camera.capture()
    assert camera.capture().image.mean() == 30
    assert camera.capture().image.mean() == 10  # loops
    once = FolderCamera(FolderCameraConfig(path=str(tmp_path), pattern="[ac].png", loop=False))
    once.capture(), once.capture()
    with pytest.raises(SkipCapture, match="all 2 images have been captured"):
        once.capture()


def test_folder_camera_disconnects_and_comes_back(tmp_path):
    folder = tmp_path / "share"
    folder.mkdir()
    _write(folder / "a.png", 50)
    camera = FolderCamera(FolderCameraConfig(path=str(folder)))
    assert camera.available() and camera.capture().image.mean() == 50
    shutil.rmtree(folder)
    assert not camera.available()
    with pytest.raises(CameraDisconnected, match="not available"):
        camera.capture()
    folder.mkdir()
    _write(folder / "a.png", 60)
    assert camera.available() and camera.capture().image.mean() == 60


def test_opencv_camera_drops_and_reconnects(tmp_path):
    """A real cv2.VideoCapture (image-sequence backend) that runs dry behaves like an unplugged camera."""
    frames = tmp_path / "seq"
    frames.mkdir()
    for i in range(2):
        _write(frames / f"f{i:03d}.png", 20 * (i + 1))
    config = OpenCVCameraConfig(source=str(frames / "f%03d.png"), backend="images", discard_frames=0,
                                reconnect_interval_s=0.01)  # the shortest wait a config may ask for
    camera = make_camera(config)
    assert isinstance(camera, OpenCVCamera)
    assert [camera.capture().image.mean() for _ in range(2)] == [20, 40]
    with pytest.raises(CameraDisconnected, match="stopped delivering frames"):
        camera.capture()
    shutil.rmtree(frames)  # unplugged
    time.sleep(0.02)
    with pytest.raises(CameraDisconnected, match="cannot be opened"):
        camera.capture()
    assert not camera.available()
    frames.mkdir()  # plugged back in
    _write(frames / "f000.png", 90)
    time.sleep(0.02)
    assert camera.capture().image.mean() == 90
    camera.close()


def test_opencv_camera_waits_between_reconnect_attempts(tmp_path):
    now = [0.0]
    camera = OpenCVCamera(OpenCVCameraConfig(source=str(tmp_path / "none%03d.png"), backend="images",
                                             reconnect_interval_s=5.0), clock=lambda: now[0])
    with pytest.raises(CameraDisconnected, match="cannot be opened"):
        camera.capture()
    with pytest.raises(CameraDisconnected, match="retrying shortly"):
        camera.capture()
    now[0] = 6.0
    with pytest.raises(CameraDisconnected, match="cannot be opened"):
        camera.capture()
