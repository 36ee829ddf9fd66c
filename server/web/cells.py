"""The cells a gallery shows, and their crops.

A result/2 carries its cells (class, centre, bounding box, area, confidence, border contact); they
are shown as sent. A result/1 has no cells: when its class mask is stored, the gallery shows the
mask's connected regions per class instead, marked as regions (touching cells can share one region
and these are not the counted instances; confidence is unknown). With neither, the gallery is pending.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

CLASS_ORDER = ("wbc", "platelet", "rbc")
CLASS_NAMES = {"rbc": "red cells", "wbc": "white cells", "platelet": "platelets"}
_MASK_INDEX = {"rbc": 1, "wbc": 2, "platelet": 3}
MIN_REGION_PX = 12


@dataclass(frozen=True)
class Cell:
    cell_id: str
    cls: str
    bbox: tuple[int, int, int, int]  # x, y, width, height in field pixels
    area_px: float | None
    confidence: float | None
    border: bool | None


_CLASS_BY_INDEX = {index: name for name, index in _MASK_INDEX.items()}
_PREFIX = {"rbc": "rbc", "wbc": "wbc", "platelet": "plt"}


def cells_from_result(result: dict[str, Any]) -> list[Cell] | None:
    """The result's own cell records (result/2: `cells.columns` names the fields of each row of
    `cells.items`, runtime/contracts/schemas/result-2.schema.json); None when it has none. A cell's
    id is its class and its number in the result (`wbc-1`), as the device's overlay labels it."""
    table = result.get("cells")
    if not isinstance(table, dict) or not isinstance(table.get("items"), list):
        return None
    columns = table.get("columns")
    if not isinstance(columns, list):
        return None
    at = {name: i for i, name in enumerate(columns)}
    if not {"class", "number", "box_x", "box_y", "box_w", "box_h"} <= set(at):
        return None
    cells = []
    for row in table["items"]:
        if not isinstance(row, list) or len(row) != len(columns):
            continue
        cls = _CLASS_BY_INDEX.get(row[at["class"]])
        x, y, w, h = (row[at[k]] for k in ("box_x", "box_y", "box_w", "box_h"))
        if cls is None or not all(isinstance(v, (int, float)) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            continue
        area = row[at["area_px"]] if "area_px" in at else None
        conf = row[at["confidence"]] if "confidence" in at else None
        border = row[at["border"]] if "border" in at else None
        cells.append(Cell(f"{_PREFIX[cls]}-{row[at['number']]}", cls, (int(x), int(y), int(w), int(h)),
                          area if isinstance(area, (int, float)) else None,
                          conf if isinstance(conf, (int, float)) else None,
                          bool(border) if border in (0, 1, True, False) else None))
    return cells


@lru_cache(maxsize=64)
def cells_from_mask(mask_png: bytes) -> tuple[Cell, ...]:
    """Connected regions of each class in a stored class mask (cached by the mask's bytes)."""
    import cv2

    from runtime.contracts.errors import ImageError
    from runtime.contracts.imageio import decode_class_mask

    try:
        mask = decode_class_mask(mask_png, "stored class mask")
    except ImageError:
        return ()
    h, w = mask.shape
    out = []
    for cls, index in _MASK_INDEX.items():
        n, _, stats, _ = cv2.connectedComponentsWithStats((mask == index).astype(np.uint8), connectivity=8)
        for i in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[i])
            if area < MIN_REGION_PX:
                continue
            border = x == 0 or y == 0 or x + bw >= w or y + bh >= h
            out.append(Cell(f"{cls}-{len(out)}", cls, (x, y, bw, bh), float(area), None, border))
    return tuple(out)


def crop(image: np.ndarray, box: tuple[int, int, int, int], size: int = 96) -> np.ndarray:
    """A square crop around a cell with a margin, scaled to `size` pixels."""
    import cv2

    x, y, w, h = box
    side = int(max(w, h) * 1.4) + 8
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    x1, y1 = int(min(image.shape[1], cx + side / 2)), int(min(image.shape[0], cy + side / 2))
    patch = image[y0:y1, x0:x1]
    if patch.size == 0:
        patch = np.zeros((size, size, 3), np.uint8)
    scale = size / max(patch.shape[:2])
    return cv2.resize(patch, (max(1, round(patch.shape[1] * scale)), max(1, round(patch.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
