"""Cell outlines drawn over the frame, one colour per class, so a person can check the counts.

`render_overlay` outlines every counted cell on its own (touching red cells too), numbers white
cells and platelets, and keeps the legend and counts in a panel beside the frame, never over a
cell; `render_gallery` shows each white cell and platelet as a captioned crop. `draw_overlay` is
the older class-outline view with the legend inside the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from runtime.contracts.classes import CELL_CLASSES
from runtime.contracts.sample import field_number

if TYPE_CHECKING:
    from runtime.analysis.cells import Cell, CellTable

# BGR; chosen to stay distinguishable on a pink-violet stained smear.
CLASS_COLOURS_BGR: dict[str, tuple[int, int, int]] = {
    "rbc": (0, 200, 255),  # amber
    "wbc": (255, 150, 40),  # light blue
    "platelet": (40, 220, 40),  # green
}


def draw_overlay(image_bgr: np.ndarray, mask: np.ndarray, counts: dict[str, int] | None = None,
                 thickness: int | None = None, legend: bool = True) -> np.ndarray:
    """A copy of the frame with each class's outlines in its colour and a legend with the counts
    (the given ones, e.g. a result's, else the number of outlines drawn)."""
    if mask.shape != image_bgr.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image_bgr.shape[:2]}")
    out = image_bgr.copy()
    thickness = thickness or max(1, round(max(mask.shape) / 400))
    drawn = {}
    for name, index in CELL_CLASSES.items():
        binary = (mask == index).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        drawn[name] = len(contours)
        cv2.drawContours(out, contours, -1, CLASS_COLOURS_BGR[name], thickness, lineType=cv2.LINE_AA)
    if legend:
        _draw_legend(out, counts if counts is not None else drawn)
    return out


def _draw_legend(out: np.ndarray, counts: dict[str, int]) -> None:
    """Counts in each class's colour on a darkened box, readable over any smear."""
    scale = max(0.45, min(out.shape[:2]) / 900)
    line_h = int(round(24 * scale / 0.5))
    texts = [f"{name}: {n}" for name, n in counts.items()]
    width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for t in texts) + 16
    height = line_h * len(texts) + 12
    box = out[4:4 + height, 4:4 + width]
    box[:] = (box.astype(np.float32) * 0.35).astype(np.uint8)
    for row, (name, text) in enumerate(zip(counts, texts)):
        y = 4 + line_h * (row + 1)
        cv2.putText(out, text, (12, y), cv2.FONT_HERSHEY_SIMPLEX, scale, CLASS_COLOURS_BGR[name], 1, cv2.LINE_AA)


# --- per-cell overlays and galleries ---------------------------------------------------------------

CELL_NAMES = {"rbc": "red cell", "wbc": "white cell", "platelet": "platelet"}
CELL_TAGS = {"wbc": "W", "platelet": "P"}
"""White cells and platelets are numbered on the overlay (W1, P1, ...) and in the gallery; red cells
are too many to number."""
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_PANEL_BG = (32, 32, 32)
_TEXT = (235, 235, 235)
_MIN_LONG_SIDE = 900
"""Frames are enlarged to at least this many pixels along their long side, so thin outlines and
numbers stay legible on small fields."""


def instance_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels of an instance label image whose right or lower neighbour, or left or upper one,
    carries another label: every instance's own outline, also where two instances touch."""
    edge = np.zeros(labels.shape, bool)
    diff_x = labels[:, 1:] != labels[:, :-1]
    diff_y = labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= diff_x
    edge[:, :-1] |= diff_x
    edge[1:, :] |= diff_y
    edge[:-1, :] |= diff_y
    edge[0, :] |= True
    edge[-1, :] |= True
    edge[:, 0] |= True
    edge[:, -1] |= True
    return edge & (labels > 0)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: tuple[int, int, int],
          thickness: int = 1) -> None:
    """Text with a dark rim, readable over any stain."""
    cv2.putText(img, text, org, _FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, _FONT, scale, colour, thickness, cv2.LINE_AA)


def render_overlay(image_bgr: np.ndarray, labels: dict[str, np.ndarray], cells: "CellTable",
                   title: str = "", notes: Sequence[str] = ()) -> np.ndarray:
    """The frame with every cell's own outline in its class colour (touching cells each outlined),
    white cells and platelets numbered beside them, and a side panel, outside the frame, with the
    counts, the legend, `title` and `notes` (e.g. quality and review reasons)."""
    h, w = image_bgr.shape[:2]
    zoom = max(1.0, _MIN_LONG_SIDE / max(h, w))
    size = (int(round(w * zoom)), int(round(h * zoom)))
    frame = cv2.resize(image_bgr, size, interpolation=cv2.INTER_LINEAR) if zoom > 1 else image_bgr.copy()
    thick = np.ones((3, 3), np.uint8)
    occupied = np.zeros(frame.shape[:2], bool)  # cell pixels of every class, where numbers avoid going
    for name in ("rbc", "platelet", "wbc"):  # white cells drawn last: on top where classes meet
        lab = labels[name].astype(np.float32)  # ids are exact in float32, which OpenCV resizes and filters
        if zoom > 1:
            lab = cv2.resize(lab, size, interpolation=cv2.INTER_NEAREST)
        occupied |= lab > 0
        # Labels from the network grid arrive as blocks of a few pixels; a 5x5 median (each pixel
        # takes one of its neighbours' ids) rounds the steps off the outlines.
        lab = cv2.medianBlur(lab, 5).astype(np.int32)
        edge = instance_boundaries(lab)
        if name != "rbc" or zoom >= 1.5:
            edge = cv2.dilate(edge.astype(np.uint8), thick).astype(bool) & (lab > 0)
        frame[edge] = CLASS_COLOURS_BGR[name]
    scale = 0.6 * max(1.0, zoom * 0.8)
    taken = _Occupancy(occupied)
    for name, tag in CELL_TAGS.items():
        for cell in cells.by_class.get(name, ()):
            box = tuple(v * zoom for v in cell.bbox_px)
            label = f"{tag}{cell.number}"
            (tw, th), _ = cv2.getTextSize(label, _FONT, scale, 1)
            tx, ty = _label_spot(taken, box, (tw, th))
            taken.mark(tx - 2, ty - th - 3, tw + 4, th + 6)  # later labels keep off this one
            _text(frame, label, (tx, ty), scale, CLASS_COLOURS_BGR[name])
    return np.hstack([frame, _panel(size[1], cells, title, notes)])


class _Occupancy:
    """Which pixels of the drawn frame already hold a cell or a label. A query is a label-sized
    rectangle, so counting its pixels directly is cheaper than keeping an integral image current
    after every placed label."""

    def __init__(self, occupied: np.ndarray) -> None:
        self.occupied = occupied

    def mark(self, x: int, y: int, w: int, h: int) -> None:
        self.occupied[max(0, y):max(0, y + h), max(0, x):max(0, x + w)] = True

    def count(self, x: int, y: int, w: int, h: int) -> int:
        return int(np.count_nonzero(self.occupied[max(0, y):max(0, y + h), max(0, x):max(0, x + w)]))


def _label_spot(taken: _Occupancy, box: tuple[float, ...], text: tuple[int, int]) -> tuple[int, int]:
    """Where a cell's number goes (text origin, baseline-left): of the spots right, left, above and
    below its box, the one covering the fewest pixels of other cells and labels; the text stays
    inside the frame. The first spot wins ties, so in an empty field a label sits right of its cell."""
    x, y, bw, bh = box
    tw, th = text
    hh, ww = taken.occupied.shape
    spots = [(x + bw + 3, y + (bh + th) / 2), (x - tw - 3, y + (bh + th) / 2),
             (x + (bw - tw) / 2, y - 5), (x + (bw - tw) / 2, y + bh + th + 5)]
    best: tuple[int, int, int] | None = None
    for sx, sy in spots:
        tx, ty = int(min(max(2, sx), ww - tw - 2)), int(min(max(th + 2, sy), hh - 2))
        cost = taken.count(tx - 1, ty - th - 1, tw + 2, th + 3)
        if best is None or cost < best[0]:
            best = (cost, tx, ty)
    return best[1], best[2]


def _panel(height: int, cells: "CellTable", title: str, notes: Sequence[str]) -> np.ndarray:
    width = 300
    panel = np.full((max(height, 260), width, 3), _PANEL_BG, np.uint8)
    y = 28
    for line in _wrap(title, 28)[:3]:
        cv2.putText(panel, line, (12, y), _FONT, 0.55, _TEXT, 1, cv2.LINE_AA)
        y += 22
    y += 8
    counts = cells.counts
    for name in ("rbc", "wbc", "platelet"):
        cv2.rectangle(panel, (12, y - 13), (30, y + 3), CLASS_COLOURS_BGR[name], -1)
        cv2.putText(panel, f"{counts[name]:>4}  {_noun(counts[name], CELL_NAMES[name])}", (40, y), _FONT, 0.6,
                    CLASS_COLOURS_BGR[name], 1, cv2.LINE_AA)
        y += 28
    y += 4
    for line in ("outline: one per counted cell", "W1, P1: white cell, platelet", "(crops in the gallery)"):
        cv2.putText(panel, line, (12, y), _FONT, 0.45, _TEXT, 1, cv2.LINE_AA)
        y += 20
    y += 8
    for note in notes:
        for line in _wrap(note, 38):
            if y > panel.shape[0] - 10:
                break
            cv2.putText(panel, line, (12, y), _FONT, 0.42, (120, 200, 255), 1, cv2.LINE_AA)
            y += 18
    return panel[:height] if panel.shape[0] > height else panel


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters, breaking at spaces, and inside words longer than a line."""
    lines, line = [], ""
    words = [w[i:i + width] for w in text.split() for i in range(0, len(w), width)]
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


def render_gallery(image_bgr: np.ndarray, labels: dict[str, np.ndarray], cells: "CellTable",
                   title: str = "", tile: int = 128, columns: int = 6, limit: int = 60) -> np.ndarray:
    """Every white cell and platelet of the field (the first `limit`) as a crop (its outline drawn,
    `tile` px square), captioned with its number, class and confidence; a short note when the
    field has none."""
    everyone = [c for name in ("wbc", "platelet") for c in cells.by_class.get(name, ())]
    chosen = everyone[:limit]
    caption_h, header_h = 34, 34
    n_cols = max(1, min(columns, len(chosen)))
    n_rows = max(1, -(-len(chosen) // n_cols))
    counts = cells.counts
    head = f"{title}  " if title else ""
    more = f" (first {limit} shown)" if len(everyone) > limit else ""
    header = (f"{head}{counts['wbc']} {_noun(counts['wbc'], CELL_NAMES['wbc'])}, "
              f"{counts['platelet']} {_noun(counts['platelet'], CELL_NAMES['platelet'])}{more}")
    (text_w, _), _ = cv2.getTextSize(header, _FONT, 0.55, 1)
    width = max(n_cols * tile, 420, text_w + 16)  # the header is never cut off
    out = np.full((header_h + n_rows * (tile + caption_h), width, 3), _PANEL_BG, np.uint8)
    cv2.putText(out, header, (8, 23), _FONT, 0.55, _TEXT, 1, cv2.LINE_AA)
    if not chosen:
        cv2.putText(out, "no white cell or platelet in this field", (8, header_h + 40), _FONT, 0.5, _TEXT, 1,
                    cv2.LINE_AA)
        return out
    for i, cell in enumerate(chosen):
        r, c = divmod(i, n_cols)
        x0, y0 = c * tile, header_h + r * (tile + caption_h)
        out[y0:y0 + tile, x0:x0 + tile] = _crop(image_bgr, labels[cell.cls], cell, tile)
        colour = CLASS_COLOURS_BGR[cell.cls]
        cv2.putText(out, f"{CELL_TAGS[cell.cls]}{cell.number} {'white' if cell.cls == 'wbc' else 'platelet'}",
                    (x0 + 4, y0 + tile + 14), _FONT, 0.45, colour, 1, cv2.LINE_AA)
        cv2.putText(out, f"conf {cell.confidence:.2f}" + ("  edge" if cell.on_border else ""),
                    (x0 + 4, y0 + tile + 29), _FONT, 0.42, _TEXT, 1, cv2.LINE_AA)
    return out


def _noun(n: int, noun: str) -> str:
    """`noun` as it goes after the number `n` ('1 platelet', '4 platelets')."""
    return noun if n == 1 else noun + "s"


def _crop(image_bgr: np.ndarray, labels: np.ndarray, cell: "Cell", tile: int) -> np.ndarray:
    """A square around the cell (1.6x its larger side, at least 24 px), grey beyond the frame's
    edge, its outline drawn, resized to `tile`."""
    _, _, w, h = cell.bbox_px
    side = max(24, int(round(1.6 * max(w, h))))
    x0 = int(round(cell.centre_px[0])) - side // 2
    y0 = int(round(cell.centre_px[1])) - side // 2
    crop = np.full((side, side, 3), 128, np.uint8)
    mine = np.zeros((side, side), np.uint8)
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(image_bgr.shape[1], x0 + side), min(image_bgr.shape[0], y0 + side)
    if fx1 > fx0 and fy1 > fy0:
        crop[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = image_bgr[fy0:fy1, fx0:fx1]
        mine[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = labels[fy0:fy1, fx0:fx1] == cell.number
    crop = cv2.resize(crop, (tile, tile), interpolation=cv2.INTER_CUBIC if side < tile else cv2.INTER_AREA)
    # The cell's pixels come from the network grid as blocks; the overlay's 5x5 median rounds their
    # steps, and a linear resize thresholded at half keeps the outline smooth when the crop is
    # enlarged (a platelet's crop is magnified 2-4x).
    mine = cv2.medianBlur(mine * 255, 5)
    mine = (cv2.resize(mine, (tile, tile), interpolation=cv2.INTER_LINEAR) > 127).view(np.uint8)
    contours, _ = cv2.findContours(mine, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(crop, contours, -1, CLASS_COLOURS_BGR[cell.cls], 1, lineType=cv2.LINE_AA)
    return crop


def field_name(sample_id: str, field_index: int | None) -> str:
    """`<sample>_f<number>`: how a field's overlay and gallery files are named, the field counted
    from 1 (field_number; characters outside letters, digits, '.', '_' and '-' become '_')."""
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in sample_id)[:80] or "sample"
    return f"{safe}_f{field_number(field_index)}"
