"""Camera sources behind one interface, chosen by the config's `camera.type`.

- `opencv`: a device index (UVC microscope cameras), a GStreamer pipeline string (Raspberry Pi
  cameras through libcamerasrc, Jetson CSI cameras through nvarguscamerasrc), a video file or URL;
- `folder`: image files from a folder in name order (a scanner's drop folder, recorded fields);
- `synthetic`: seeded synthetic smears, for demos and tests.

A capture that fails raises CameraDisconnected (the source is gone; the device shows `offline`
and reconnects) or ImageError (this one frame is unusable). Neither stops the device.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import cv2
import numpy as np

from runtime.contracts.config import CameraConfig, FolderCameraConfig, OpenCVCameraConfig, SyntheticCameraConfig
from runtime.contracts.errors import ConfigError, SkipCapture
from runtime.contracts.imageio import check_frame, read_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


class CameraDisconnected(SkipCapture):
    """The camera is unplugged or stopped delivering frames; the device reconnects and carries on."""


@dataclass(frozen=True)
class Frame:
    """One captured frame (HxWx3 uint8 BGR), where it came from, and its scale when the source knows it."""

    image: np.ndarray
    source: str
    um_per_px: float | None = None
    truth: dict[str, Any] | None = field(default=None, compare=False)  # synthetic frames: exact counts


@runtime_checkable
class Camera(Protocol):
    """A source of frames; `capture` returns one frame or raises CameraDisconnected / ImageError."""

    name: str

    def capture(self) -> Frame: ...

    def available(self) -> bool:
        """Cheap check (and reconnect attempt) used while idle, so the status recovers by itself."""
        ...

    def close(self) -> None: ...


class SyntheticCamera:
    """Seeded synthetic smears: capture n renders seed `seed + n`, so a run is reproducible."""

    def __init__(self, config: SyntheticCameraConfig) -> None:
        self.config = config
        self.name = f"synthetic(seed={config.seed})"
        self._count = 0

    def capture(self) -> Frame:
        from runtime.capture.synthetic import generate_smear

        seed = self.config.seed + self._count
        self._count += 1
        smear = generate_smear(seed, height=self.config.height, width=self.config.width, um_per_px=self.config.um_per_px)
        truth = {"counts": dict(smear.counts), "area_pct": dict(smear.area_pct), "seed": seed}
        return Frame(image=smear.image, source=f"synthetic seed {seed}", um_per_px=smear.um_per_px, truth=truth)

    def available(self) -> bool:
        return True

    def close(self) -> None:
        pass


class FolderCamera:
    """Images of a folder in name order; the folder is listed on each capture so new files appear."""

    def __init__(self, config: FolderCameraConfig) -> None:
        self.config = config
        self.folder = Path(config.path)
        self.name = f"folder({self.folder})"
        self._count = 0

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            raise CameraDisconnected(f"{self.folder}: image folder is not available")
        files = sorted(p for p in self.folder.glob(self.config.pattern)
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise CameraDisconnected(f"{self.folder}: no images matching {self.config.pattern!r}")
        return files

    def capture(self) -> Frame:
        files = self._files()
        if self._count >= len(files) and not self.config.loop:
            raise SkipCapture(f"{self.folder}: all {len(files)} images have been captured (loop: false)")
        path = files[self._count % len(files)]
        self._count += 1
        return Frame(image=read_image(path), source=str(path))

    def available(self) -> bool:
        try:
            self._files()
        except CameraDisconnected:
            return False
        return True

    def close(self) -> None:
        pass


_BACKENDS = {
    "auto": cv2.CAP_ANY,
    "v4l2": cv2.CAP_V4L2,
    "gstreamer": cv2.CAP_GSTREAMER,
    "ffmpeg": cv2.CAP_FFMPEG,
    "images": cv2.CAP_IMAGES,
}


class OpenCVCamera:
    """cv2.VideoCapture on a device index, a GStreamer pipeline, a file or URL; reopens after a drop."""

    def __init__(self, config: OpenCVCameraConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.name = f"opencv({config.source})"
        self._capture: cv2.VideoCapture | None = None
        self._clock = clock
        self._last_attempt: float | None = None

    def _backend(self) -> int:
        if self.config.backend == "auto" and isinstance(self.config.source, str) and "!" in self.config.source:
            return cv2.CAP_GSTREAMER  # a pipeline string: "... ! appsink"
        return _BACKENDS[self.config.backend]

    def _open(self) -> None:
        self._last_attempt = self._clock()
        cap = cv2.VideoCapture(self.config.source, self._backend())
        if not cap.isOpened():
            cap.release()
            raise CameraDisconnected(f"camera {self.config.source!r} cannot be opened (unplugged or busy?)")
        if self.config.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
        if self.config.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
        self._capture = cap
        log.info("camera %s opened", self.name)

    def _ensure_open(self) -> cv2.VideoCapture:
        if self._capture is None:
            if self._last_attempt is not None and self._clock() - self._last_attempt < self.config.reconnect_interval_s:
                raise CameraDisconnected(f"camera {self.config.source!r} is disconnected; retrying shortly")
            self._open()
        assert self._capture is not None
        return self._capture

    def _drop(self, why: str) -> CameraDisconnected:
        if self._capture is not None:
            self._capture.release()
        self._capture = None
        self._last_attempt = self._clock()
        log.warning("camera %s dropped: %s", self.name, why)
        return CameraDisconnected(f"camera {self.config.source!r} {why}; will reconnect")

    def capture(self) -> Frame:
        cap = self._ensure_open()
        for _ in range(self.config.discard_frames):
            if not cap.grab():
                raise self._drop("stopped delivering frames")
        ok, image = cap.read()
        if not ok or image is None:
            raise self._drop("stopped delivering frames")
        return Frame(image=check_frame(image, source=self.name), source=self.name)

    def available(self) -> bool:
        if self._capture is not None:
            return True
        try:
            self._ensure_open()
        except CameraDisconnected:
            return False
        return True

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def make_camera(config: CameraConfig) -> Camera:
    """The camera the config's `type` names."""
    if isinstance(config, SyntheticCameraConfig):
        return SyntheticCamera(config)
    if isinstance(config, FolderCameraConfig):
        return FolderCamera(config)
    if isinstance(config, OpenCVCameraConfig):
        return OpenCVCamera(config)
    raise ConfigError(f"camera.type: unsupported {type(config).__name__}")


__all__ = ["Camera", "CameraDisconnected", "Frame", "FolderCamera", "OpenCVCamera", "SyntheticCamera", "make_camera"]
