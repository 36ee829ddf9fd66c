"""The field every pipeline run analyses: a real camera-size field, a given image file, or a
seeded synthetic smear.

The default (`camera`) is what a device's camera delivers: a 1280x960 frame. No real smear of
that size ships with the package, so it is tiled 2x2 from four of the bundled real 640x480 frames
(runtime/capture/frames), which all come from one source at one magnification: the first four
in name order, placed left to right, top to bottom. Tiling keeps the pixel size, so the field's
calibration is the bundled frames' own (frames.json). The seams cut some cells in two; the counts
of this field say the pipeline ran, not how many cells a real 1280x960 field holds.

The frame is also stored as a file in a scratch folder so the capture stage can read and decode
it through the device's own folder camera, as a slide scanner's drop folder would deliver it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FIELD_KINDS = ("camera", "synthetic")
#: A camera frame, height x width, tiled from TILE_GRID bundled frames.
CAMERA_HW = (960, 1280)
TILE_GRID = (2, 2)
# A VGA synthetic field at 0.125 µm/px: a red cell is about 60 px across, as behind a 100x oil
# objective; preprocessing shrinks it to the model's size.
SYNTHETIC_HW = (480, 640)
SYNTHETIC_UM_PER_PX = 0.125
JPEG_QUALITY = 95


@dataclass(frozen=True)
class BenchFrame:
    """The benchmark field, where it came from, its file in the capture folder and its calibration
    (None: unknown, so only the uncalibrated pipeline can run)."""

    image: np.ndarray
    source: str
    file: Path
    um_per_px: float | None
    kind: str = "image"
    tiles: tuple[str, ...] = field(default=())

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


def load_frame(workdir: Path, image: Path | None, um_per_px: float | None, kind: str = "camera",
               seed: int = 0) -> BenchFrame:
    """`image` as given (read with the device's reader), else the `kind` of field stored as JPEG.

    `um_per_px`, when given, replaces the field's own calibration."""
    from runtime.contracts.imageio import read_image

    folder = workdir / "capture"
    folder.mkdir(parents=True, exist_ok=True)
    if image is not None:
        frame = read_image(image)
        target = folder / f"field{image.suffix.lower()}"
        shutil.copyfile(image, target)
        return BenchFrame(frame, str(image), target, um_per_px)
    if kind == "camera":
        return camera_field(folder, um_per_px)
    if kind != "synthetic":
        raise ValueError(f"unknown field kind {kind!r}; known: {', '.join(FIELD_KINDS)}")

    from runtime.capture.synthetic import generate_smear

    smear = generate_smear(seed, height=SYNTHETIC_HW[0], width=SYNTHETIC_HW[1], um_per_px=SYNTHETIC_UM_PER_PX)
    target, decoded = store_jpeg(folder, smear.image)
    source = f"synthetic smear seed {seed} ({SYNTHETIC_UM_PER_PX} um/px, JPEG q{JPEG_QUALITY})"
    return BenchFrame(decoded, source, target, um_per_px if um_per_px is not None else smear.um_per_px, "synthetic")


def tile_bundled_frames() -> tuple[np.ndarray, tuple[str, ...]]:
    """The camera-size field tiled from the first bundled frames in name order, and their names.

    Every tile must have the same size, and the grid must make CAMERA_HW: a bundled set of another
    size or source would change what the field is, so it is refused rather than resized."""
    from runtime.capture.bundled import bundled_frames
    from runtime.contracts.errors import DataError

    rows, cols = TILE_GRID
    chosen = bundled_frames()[: rows * cols]
    if len(chosen) < rows * cols:
        raise DataError(f"the camera field needs {rows * cols} bundled frames, found {len(chosen)}")
    tiles = [frame.load() for frame in chosen]
    tile_hw = (CAMERA_HW[0] // rows, CAMERA_HW[1] // cols)
    wrong = [f"{f.name} {t.shape[1]}x{t.shape[0]}" for f, t in zip(chosen, tiles) if t.shape[:2] != tile_hw]
    if wrong:
        raise DataError(f"bundled frames for the camera field must be {tile_hw[1]}x{tile_hw[0]}: {', '.join(wrong)}")
    grid = np.vstack([np.hstack(tiles[r * cols:(r + 1) * cols]) for r in range(rows)])
    return grid, tuple(f.name for f in chosen)


def camera_field(folder: Path, um_per_px: float | None = None) -> BenchFrame:
    """The default field: a real 1280x960 frame at the bundled frames' calibration."""
    from runtime.capture.bundled import bundled_manifest, bundled_um_per_px

    grid, names = tile_bundled_frames()
    target, decoded = store_jpeg(folder, grid)
    calibration = bundled_um_per_px()
    upstream = str(bundled_manifest().get("upstream_source", "one source")).split(" (")[0]
    source = (f"camera field {CAMERA_HW[1]}x{CAMERA_HW[0]}: {TILE_GRID[0]}x{TILE_GRID[1]} tiles of bundled real frames "
              f"{', '.join(n[:8] for n in names)} ({upstream}; {calibration} um/px from their labels), "
              f"JPEG q{JPEG_QUALITY}")
    return BenchFrame(decoded, source, target, um_per_px if um_per_px is not None else calibration, "camera", names)


def store_jpeg(folder: Path, image: np.ndarray) -> tuple[Path, np.ndarray]:
    """Write `image` as the capture folder's JPEG and read it back with the device's reader, so
    every stage sees exactly what the camera stage decodes."""
    import cv2

    from runtime.contracts.imageio import read_image

    target = folder / "field.jpg"
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"{target}: cannot encode the benchmark field")
    target.write_bytes(encoded.tobytes())
    return target, read_image(target)
