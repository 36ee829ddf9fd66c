"""Real smear frames shipped with the package (runtime/capture/frames), with their label counts.

They let the demo, benchmarks and tests run on real images on a clone or a device install that has
no data set. The frames, their licences and how their scale was estimated are described in
frames/README.md; `frames.json` holds the source and the scale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from runtime.capture.cameras import Frame
from runtime.contracts.classes import CELL_CLASSES, CLASS_NAMES, TXL_PBC_FILE_CLASSES
from runtime.contracts.errors import DataError
from runtime.contracts.imageio import read_image

FRAMES_DIR = Path(__file__).resolve().parent / "frames"
"""Folder of the bundled frames: images/*.jpg, labels/*.txt (YOLO), frames.json, README and licences."""


@dataclass(frozen=True)
class BundledFrame:
    """One bundled frame: its image file and its YOLO label file."""

    name: str
    image_path: Path
    label_path: Path

    def load(self) -> np.ndarray:
        """The frame as an HxWx3 uint8 BGR image."""
        return read_image(self.image_path)

    def label_counts(self) -> dict[str, int]:
        """Labelled cells per project class (rbc, wbc, platelet), border-cut cells included."""
        return label_counts(self.label_path)


def bundled_frames() -> list[BundledFrame]:
    """All bundled frames in name order; an empty or incomplete folder is an error naming the file."""
    image_dir, label_dir = FRAMES_DIR / "images", FRAMES_DIR / "labels"
    images = sorted(image_dir.glob("*.jpg")) if image_dir.is_dir() else []
    if not images:
        raise DataError(f"{image_dir}: no bundled frames (the package was installed without its frames)")
    frames = []
    for image_path in images:
        label_path = label_dir / f"{image_path.stem}.txt"
        if not label_path.is_file():
            raise DataError(f"{label_path}: label file of bundled frame {image_path.name} is missing")
        frames.append(BundledFrame(image_path.stem, image_path, label_path))
    return frames


@lru_cache(maxsize=1)
def bundled_manifest() -> dict:
    """frames.json: source, frame size and the scale estimate (with how it was derived)."""
    path = FRAMES_DIR / "frames.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read the bundled frames' manifest ({exc})") from exc


def bundled_um_per_px() -> float:
    """µm per pixel of the bundled frames, estimated from their red-cell label sizes (see README)."""
    value = bundled_manifest().get("um_per_px")
    if not isinstance(value, (int, float)) or not value > 0:
        raise DataError(f"{FRAMES_DIR / 'frames.json'}: um_per_px must be a positive number, got {value!r}")
    return float(value)


def label_counts(label_path: str | Path) -> dict[str, int]:
    """Per-class cell counts of a TXL-PBC YOLO label file (`class cx cy w h` per line)."""
    label_path = Path(label_path)
    counts = dict.fromkeys(CELL_CLASSES, 0)
    try:
        lines = label_path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"{label_path}: cannot read label file ({exc.strerror or exc})") from exc
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5 or not parts[0].isdigit() or int(parts[0]) not in TXL_PBC_FILE_CLASSES:
            raise DataError(f"{label_path}:{lineno}: expected 'class cx cy w h' with class 0-2, got {line!r}")
        counts[CLASS_NAMES[TXL_PBC_FILE_CLASSES[int(parts[0])]]] += 1
    return counts


class BundledCamera:
    """The bundled real frames as a camera, in name order and round again: the demo's default.

    Each frame carries the bundled scale estimate, and its labelled counts as `truth` so a
    caller can set what the device counted beside what the labels say."""

    def __init__(self, start: int = 0) -> None:
        self.frames = bundled_frames()
        self.name = f"bundled({len(self.frames)} real frames)"
        self._count = start

    def capture(self) -> Frame:
        frame = self.frames[self._count % len(self.frames)]
        self._count += 1
        return Frame(image=frame.load(), source=f"bundled:{frame.name}", um_per_px=bundled_um_per_px(),
                     truth={"counts": frame.label_counts(), "name": frame.name})

    def available(self) -> bool:
        return True

    def close(self) -> None:
        pass
