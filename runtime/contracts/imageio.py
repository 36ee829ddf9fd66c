"""Reading and checking image files and frames, with errors that name the file and the problem."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from runtime.contracts.errors import ImageError


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 BGR array (OpenCV's order)."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file does not exist")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, expected an image file")
    data = path.read_bytes()
    if not data:
        raise ImageError(f"{path}: file is empty")
    frame = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if frame is None:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    return check_frame(frame, source=str(path))


def check_frame(frame: np.ndarray, source: str = "frame") -> np.ndarray:
    """Validate a colour frame: HxWx3, uint8. 1- and 4-channel frames are refused, not guessed at."""
    if not isinstance(frame, np.ndarray):
        raise ImageError(f"{source}: expected a numpy array, got {type(frame).__name__}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        raise ImageError(f"{source}: image has 1 channel (greyscale); a colour (3-channel) smear image is required")
    if frame.ndim != 3:
        raise ImageError(f"{source}: expected an HxWx3 image, got shape {frame.shape}")
    if frame.shape[2] == 4:
        raise ImageError(f"{source}: image has 4 channels (alpha); save it as a 3-channel colour image")
    if frame.shape[2] != 3:
        raise ImageError(f"{source}: expected 3 colour channels, got {frame.shape[2]}")
    if frame.dtype != np.uint8:
        if frame.dtype == np.uint16:
            frame = (frame // 257).astype(np.uint8)
        else:
            raise ImageError(f"{source}: unsupported pixel type {frame.dtype}, expected 8-bit")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ImageError(f"{source}: image is empty ({frame.shape[1]}x{frame.shape[0]})")
    return frame


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an image, raising ImageError if OpenCV cannot (bad extension, unwritable folder)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageError(f"{path.parent}: cannot create output folder ({exc.strerror})") from exc
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ImageError(f"{path}: cannot encode image as {path.suffix or '.png'}")
    try:
        path.write_bytes(encoded.tobytes())
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror})") from exc
