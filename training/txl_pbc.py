"""TXL-PBC: peripheral blood smear JPEGs with YOLO boxes, read as project classes and masks.

The files use their own class order (0 WBC, 1 RBC, 2 platelets); everything leaving this module
uses the project's (runtime.contracts.classes). Boxes become masks through training.labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.contracts.classes import RBC, TXL_PBC_FILE_CLASSES
from runtime.contracts.errors import DataError
from runtime.contracts.imageio import read_image

FILE_CLASS_TO_PROJECT: dict[int, int] = TXL_PBC_FILE_CLASSES
SPLITS = ("train", "val")
LABELS = ("YOLO boxes -> inscribed ellipses, a box cut by one edge of the frame painted as the visible part of its "
          "disc (training.labels.whole_cells), RBC < platelet < WBC")
"""How masks are made from the boxes (recorded in the cards)."""


@dataclass(frozen=True)
class Box:
    """One labelled cell in pixels: project class index, centre and size."""

    cls: int
    cx: float
    cy: float
    w: float
    h: float

    @property
    def diameter(self) -> float:
        """Mean of the box's sides: the diameter of the cell it encloses."""
        return 0.5 * (self.w + self.h)


@dataclass(frozen=True)
class Sample:
    """One image of the data set and its label file."""

    image_path: Path
    label_path: Path

    @property
    def stem(self) -> str:
        return self.image_path.stem


@dataclass(frozen=True)
class Part:
    """Which frames of a split to read: all of them, or with `holdout` > 0 the last `holdout`
    frames by name (`held=True`) or all the others (`held=False`).

    Holding out the end of the train split lets two training recipes be compared on frames
    neither was trained on, without reading val (whose role is the final report).
    """

    holdout: int = 0
    held: bool = False

    def pick(self, samples: list[Sample]) -> list[Sample]:
        if self.holdout <= 0:
            if self.held:
                raise DataError("a held-out part needs a hold-out size above 0")
            return samples
        if self.holdout >= len(samples):
            raise DataError(f"hold-out of {self.holdout} frames leaves nothing of a split of {len(samples)}")
        return samples[-self.holdout:] if self.held else samples[:-self.holdout]

    def describe(self) -> dict:
        if self.holdout <= 0:
            return {}
        return {"holdout_last": self.holdout, "part": "held out" if self.held else "without the held-out frames"}


def list_samples(root: str | Path, split: str, part: Part = Part()) -> list[Sample]:
    """The (image, label) pairs of a split (all, or the `part` of it), sorted by name; the test
    split is refused on purpose."""
    if split not in SPLITS:
        raise DataError(f"txl_pbc: split must be one of {', '.join(SPLITS)}, got {split!r}")
    root = Path(root)
    image_dir, label_dir = root / "images" / split, root / "labels" / split
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: TXL-PBC image folder not found (pass the data folder, e.g. ../shared/data/txl_pbc)")
    samples = []
    for image_path in sorted(image_dir.iterdir()):
        if image_path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        samples.append(Sample(image_path, label_dir / f"{image_path.stem}.txt"))
    if not samples:
        raise DataError(f"{image_dir}: no images")
    return part.pick(samples)


def read_boxes(label_path: str | Path, width: int, height: int) -> list[Box]:
    """Parse a YOLO label file (`class cx cy w h`, normalised) into pixel boxes in project classes.

    A missing file means an image without cells; a malformed line is an error naming the file and line.
    """
    label_path = Path(label_path)
    if not label_path.is_file():
        return []
    boxes = []
    for lineno, line in enumerate(label_path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            file_cls = int(parts[0])
            cx, cy, bw, bh = (float(v) for v in parts[1:5])
        except (ValueError, IndexError) as exc:
            raise DataError(f"{label_path}:{lineno}: expected 'class cx cy w h', got {line!r}") from exc
        if file_cls not in FILE_CLASS_TO_PROJECT or len(parts) != 5:
            raise DataError(f"{label_path}:{lineno}: unknown class or extra fields in {line!r}")
        boxes.append(Box(FILE_CLASS_TO_PROJECT[file_cls], cx * width, cy * height, bw * width, bh * height))
    return boxes


def load_sample(sample: Sample) -> tuple[np.ndarray, list[Box]]:
    """The BGR image and its boxes in pixels."""
    image = read_image(sample.image_path)
    return image, read_boxes(sample.label_path, image.shape[1], image.shape[0])


def count_boxes(boxes: list[Box]) -> dict[str, int]:
    """True per-class counts of an image (every labelled cell, border-cut ones too)."""
    from runtime.contracts.classes import CELL_CLASSES

    return {name: sum(b.cls == idx for b in boxes) for name, idx in CELL_CLASSES.items()}


def median_rbc_diameter_px(boxes: list[Box]) -> float | None:
    """Median red-cell box diameter (robust to the few boxes cut by the frame edge); None without red cells."""
    sizes = [b.diameter for b in boxes if b.cls == RBC]
    return float(np.median(sizes)) if sizes else None


class TxlPbcSource:
    """TXL-PBC as a training.datasets.SegmentationSource: frames with box-derived masks.

    Each sample carries the median red-cell box size as its measured scale (`rbc_diameter_px`),
    an instance map of the painted ellipses (for centre targets) and, with `ignore_ring_px`, the
    boundary band the loss should skip.
    """

    name = "txl_pbc"

    def __init__(self, root: str | Path, split: str, ignore_ring_px: int = 0, part: Part = Part()) -> None:
        self.root, self.split, self.ignore_ring_px, self.part = Path(root), split, ignore_ring_px, part
        self.samples = list_samples(root, split, part)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from training.datasets import Sample as LabelledFrame
        from training.labels import boxes_to_instances, boxes_to_mask, whole_cells

        sample = self.samples[index]
        image, boxes = load_sample(sample)
        cells = whole_cells(boxes, image.shape[:2])
        ignore = None
        if self.ignore_ring_px > 0:
            from runtime.inference.preprocess import IGNORE_INDEX

            ignore = boxes_to_mask(cells, image.shape[:2], self.ignore_ring_px) == IGNORE_INDEX
        return LabelledFrame(
            image=image,
            mask=boxes_to_mask(cells, image.shape[:2]),
            rbc_diameter_px=median_rbc_diameter_px(boxes),
            ignore=ignore,
            instances=boxes_to_instances(cells, image.shape[:2]),
            key=f"txl_pbc/{self.split}/{sample.stem}",
        )

    def describe(self) -> dict:
        return {"name": self.name, "split": self.split, "frames": len(self), "path": str(self.root),
                "labels": LABELS,
                **self.part.describe()}


def build_source(root: str | Path, split: str, **kwargs) -> TxlPbcSource:
    """Entry point for training.datasets' registry ("txl_pbc")."""
    return TxlPbcSource(root, split, **kwargs)
