"""The field every pipeline run analyses: a given image file, or a seeded synthetic smear.

The frame is also stored as a file in a scratch folder so the capture stage can read and decode
it through the device's own folder camera, as a slide scanner's drop folder would deliver it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A VGA synthetic field at 0.125 µm/px: a red cell is about 60 px across, as behind a 100x oil
# objective; preprocessing shrinks it to the model's 40 px (a 320x432 network input).
SYNTHETIC_HW = (480, 640)
SYNTHETIC_UM_PER_PX = 0.125


@dataclass(frozen=True)
class BenchFrame:
    """The benchmark field, where it came from, and its file in the capture folder."""

    image: np.ndarray
    source: str
    file: Path
    um_per_px: float | None

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


def load_frame(workdir: Path, image: Path | None, um_per_px: float | None, seed: int = 0) -> BenchFrame:
    """`image` as given (read with the device's reader), else a synthetic smear saved as JPEG."""
    import cv2

    from runtime.contracts.imageio import read_image

    folder = workdir / "capture"
    folder.mkdir(parents=True, exist_ok=True)
    if image is not None:
        frame = read_image(image)
        target = folder / f"field{image.suffix.lower()}"
        shutil.copyfile(image, target)
        return BenchFrame(frame, str(image), target, um_per_px)

    from runtime.capture.synthetic import generate_smear

    smear = generate_smear(seed, height=SYNTHETIC_HW[0], width=SYNTHETIC_HW[1], um_per_px=SYNTHETIC_UM_PER_PX)
    target = folder / "field.jpg"
    ok, encoded = cv2.imencode(".jpg", smear.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise OSError(f"{target}: cannot encode the synthetic frame")
    target.write_bytes(encoded.tobytes())
    frame = read_image(target)
    source = f"synthetic smear seed {seed} ({SYNTHETIC_UM_PER_PX} um/px, JPEG q95)"
    return BenchFrame(frame, source, target, um_per_px if um_per_px is not None else smear.um_per_px)
