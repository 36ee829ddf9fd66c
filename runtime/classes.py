"""Class indices of the segmentation contract (DESIGN.md). Change them here only."""

from __future__ import annotations

BACKGROUND, RBC, WBC, PLATELET = 0, 1, 2, 3
CLASS_NAMES: tuple[str, ...] = ("background", "rbc", "wbc", "platelet")
CELL_CLASSES: dict[str, int] = {"rbc": RBC, "wbc": WBC, "platelet": PLATELET}
NUM_CLASSES = len(CLASS_NAMES)

TXL_PBC_FILE_CLASSES: dict[int, int] = {0: WBC, 1: RBC, 2: PLATELET}
"""TXL-PBC label files' own class order (0 WBC, 1 RBC, 2 platelets) -> project class indices."""
