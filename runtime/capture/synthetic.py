"""Synthetic blood-smear frames with exact ground truth (numpy + OpenCV only).

Used by the device demo (no camera needed), by tests, and as a training/calibration source.
Each frame comes with its class mask, instance ids, exact per-class counts and area percentages,
so anything that analyses a frame can be checked against the truth.

Rendering follows Beer-Lambert: every stained object adds optical density (OD) per colour channel
on top of a pale plasma background lit with a gradient, so overlapping red cells look darker where
they overlap, as they do under a microscope. Red cells have a thin centre (pale) and a thick rim
(dark); white cells, about twice a red cell across, have a blue-violet nucleus (round, or 2-5 lobes
joined by strands) in pale, finely granular cytoplasm; platelets are small purple granules in the
plasma, sometimes clumped.

The look is matched to the real frames the shipped model reads (TXL-PBC): plasma colour and each
class's optical density measured on them (two stain looks, mixed per field), sizes relative to the
red cell from their labels, and camera noise matched to their background's high-pass noise at the
model's working scale, then JPEG. What that buys is checked in tests/test_synthetic.py: the shipped
model counts these frames like their truth.

Truth follows paint order: red cells first, then white cells (they occlude red cells), then
platelets (they lie on top). A cell cut by the frame border counts, as in the real labelled data;
a cell counts if at least one of its pixels is visible in the frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from runtime.contracts.classes import CELL_CLASSES, PLATELET, RBC, WBC, area_percentages
from runtime.contracts.errors import ConfigError

@dataclass(frozen=True)
class _Stain:
    """Plasma colour (BGR) and optical densities per BGR channel at full stain strength."""

    plasma: tuple[float, float, float]
    rbc: tuple[float, float, float]
    nucleus: tuple[float, float, float]
    cytoplasm: tuple[float, float, float]
    granules: tuple[float, float, float]
    platelet: tuple[float, float, float]

    def mix(self, other: _Stain, t: float) -> dict[str, np.ndarray]:
        """Per-field arrays, a fraction `t` of the way from this stain to `other`."""
        return {
            name: ((1 - t) * np.array(getattr(self, name), np.float32) + t * np.array(getattr(other, name), np.float32))
            for name in self.__dataclass_fields__
        }


# Two ends of the May-Grünwald-Giemsa looks of the real frames (TXL-PBC train split: median colour
# of the background and optical density of each labelled class against it, per source). The camera's
# white balance makes violet nuclei transmit a little more blue than the plasma in grey frames, hence
# negative blue densities. Each synthetic field takes its own mix of the two.
_GREY_STAIN = _Stain(  # 640x480 frames: grey-green plasma, greyish-mauve red cells, blue-violet nuclei
    plasma=(192.0, 198.0, 195.0), rbc=(0.22, 0.37, 0.14), nucleus=(-0.10, 0.72, 0.34),
    cytoplasm=(-0.02, 0.07, 0.035), granules=(0.0, 0.14, 0.09), platelet=(-0.02, 0.30, 0.20),
)
_WARM_STAIN = _Stain(  # 360x363 frames: warm plasma, pink red cells, dark purple nuclei
    plasma=(202.0, 227.0, 254.0), rbc=(0.21, 0.36, 0.24), nucleus=(0.40, 2.0, 1.2),
    cytoplasm=(0.05, 0.16, 0.09), granules=(0.10, 0.30, 0.20), platelet=(0.25, 1.0, 0.6),
)


@dataclass(frozen=True)
class SmearStyle:
    """Density and imaging knobs; the defaults give a typical thin, well-spread smear."""

    rbc_coverage: float = 0.38
    """Target fraction of the frame covered by red cells (before occlusion)."""
    rbc_overlap_fraction: float = 0.15
    """Share of red cells allowed to overlap a neighbour (the rest keep a mostly single layer)."""
    wbc_per_10k_um2: float = 1.0
    """Mean white cells per 10,000 µm² of frame (Poisson; far above real blood, so every frame teaches
    something about white cells); at least `min_wbc` are placed."""
    min_wbc: int = 1
    platelets_per_rbc: float = 0.06
    clump_probability: float = 0.3
    blur_sigma_um: tuple[float, float] = (0.05, 0.25)
    noise_sigma: tuple[float, float] = (2.0, 5.0)
    """Camera noise per channel (grey levels); the default gives the real frames' background high-pass
    noise at the model's scale (about 2.4 grey levels). Much smoother frames read as cytoplasm to the model."""
    stain_mix: tuple[float, float] = (0.0, 0.15)
    """Range of each field's stain, from the grey look (0) to the warm look (1) of the real frames. The
    default stays near the grey look: in warm fields red cells carry little saturation against their
    plasma, and the quality gate's coverage (Otsu on saturation) then sees only nuclei and rejects them."""
    stain_jitter: float = 0.15
    lighting_strength: float = 0.12
    jpeg_quality: int | None = 90
    """JPEG round trip, as the real frames are stored; None keeps the raw render."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.rbc_coverage <= 0.9:
            raise ConfigError(f"synthetic.rbc_coverage: must be in [0, 0.9], got {self.rbc_coverage}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"synthetic.jpeg_quality: must be 1-100, got {self.jpeg_quality}")


@dataclass(frozen=True)
class SyntheticSmear:
    """One synthetic frame and its exact truth."""

    image: np.ndarray
    """HxWx3 uint8, BGR (OpenCV order)."""
    mask: np.ndarray
    """HxW uint8 class indices (runtime.contracts.classes)."""
    instances: np.ndarray
    """HxW int32 instance ids, 0 = background; ids are 1..N."""
    instance_classes: np.ndarray
    """uint8 array of length N+1: class index of each instance id (index 0 = background)."""
    counts: dict[str, int]
    """Visible cells per class (every instance with at least one pixel in the frame)."""
    area_pct: dict[str, float]
    """Percent of frame pixels per class, from `mask` via runtime.contracts.classes.area_percentages."""
    um_per_px: float
    seed: int
    centres: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 2), np.float32))
    """(N, 2) float32 (x, y) centre of each instance's full footprint (may lie outside the frame)."""


@dataclass
class _Cell:
    cls: int
    cx: float
    cy: float
    rx: float
    ry: float
    angle: float
    nucleus_lobes: int = 0


def generate_smear(
    seed: int,
    height: int = 384,
    width: int = 512,
    um_per_px: float = 0.2,
    style: SmearStyle | None = None,
) -> SyntheticSmear:
    """Render a seeded synthetic smear of `height` x `width` px at `um_per_px` µm per pixel."""
    if height < 16 or width < 16:
        raise ConfigError(f"synthetic: frame must be at least 16x16 px, got {width}x{height}")
    if not um_per_px > 0:
        raise ConfigError(f"synthetic: um_per_px must be positive, got {um_per_px}")
    style = style or SmearStyle()
    rng = np.random.default_rng(seed)
    px_per_um = 1.0 / um_per_px

    wbcs = _place_wbcs(rng, height, width, px_per_um, style)
    rbcs = _place_rbcs(rng, height, width, px_per_um, style, wbcs)
    platelets = _place_platelets(rng, height, width, px_per_um, style, rbcs + wbcs)
    cells = rbcs + wbcs + platelets  # paint order

    od = np.zeros((height, width, 3), np.float32)
    instances = np.zeros((height, width), np.int32)
    classes = np.zeros(len(cells) + 1, np.uint8)
    centres = np.zeros((len(cells), 2), np.float32)
    stain = _field_stain(rng, style)
    for idx, cell in enumerate(cells, start=1):
        classes[idx] = cell.cls
        centres[idx - 1] = (cell.cx, cell.cy)
        _paint_cell(rng, cell, idx, od, instances, stain)

    image = _expose(rng, od, style, px_per_um, stain["plasma"])
    mask = classes[instances]
    visible = np.unique(instances)
    visible = visible[visible > 0]
    counts = {name: int(np.count_nonzero(classes[visible] == idx)) for name, idx in CELL_CLASSES.items()}
    return SyntheticSmear(
        image=image,
        mask=mask,
        instances=instances,
        instance_classes=classes,
        counts=counts,
        area_pct=area_percentages(mask),
        um_per_px=float(um_per_px),
        seed=int(seed),
        centres=centres,
    )


# --- placement ---------------------------------------------------------------------------------


def _place_wbcs(rng: np.random.Generator, h: int, w: int, px_per_um: float, style: SmearStyle) -> list[_Cell]:
    area_um2 = h * w / px_per_um**2
    n = max(style.min_wbc, int(rng.poisson(style.wbc_per_10k_um2 * area_um2 / 1e4)))
    cells: list[_Cell] = []
    for _ in range(n * 20):
        if len(cells) >= n:
            break
        r = rng.uniform(5.5, 8.0) * px_per_um  # about twice a red cell across, as in the real frames
        cx, cy = rng.uniform(-0.3 * r, w + 0.3 * r), rng.uniform(-0.3 * r, h + 0.3 * r)
        if any(np.hypot(cx - c.cx, cy - c.cy) < (r + c.rx) * 1.05 for c in cells):
            continue
        lobes = 1 if rng.random() < 0.4 else int(rng.integers(2, 6))
        cells.append(_Cell(WBC, cx, cy, r, r * rng.uniform(0.9, 1.0), rng.uniform(0, 180), lobes))
    return cells


def _place_rbcs(
    rng: np.random.Generator, h: int, w: int, px_per_um: float, style: SmearStyle, wbcs: list[_Cell]
) -> list[_Cell]:
    mean_r = 3.75 * px_per_um
    target = int(style.rbc_coverage * h * w / (np.pi * mean_r**2))
    centres = np.zeros((0, 2), np.float32)
    radii = np.zeros(0, np.float32)
    cells: list[_Cell] = []
    wbc_xy = np.array([[c.cx, c.cy] for c in wbcs], np.float32).reshape(-1, 2)
    wbc_r = np.array([c.rx for c in wbcs], np.float32)
    for _ in range(target * 15):
        if len(cells) >= target:
            break
        r = rng.uniform(3.25, 4.25) * px_per_um
        margin = 0.8 * r  # centres up to 0.8 r outside the frame: cut cells at the border
        cx, cy = rng.uniform(-margin, w + margin), rng.uniform(-margin, h + margin)
        if len(wbc_r) and np.any(np.hypot(wbc_xy[:, 0] - cx, wbc_xy[:, 1] - cy) < wbc_r + 0.4 * r):
            continue
        if len(radii):
            dist = np.hypot(centres[:, 0] - cx, centres[:, 1] - cy)
            allowed = 0.65 if rng.random() < style.rbc_overlap_fraction else 1.0
            if np.any(dist < (radii + r) * allowed):
                continue
        centres = np.vstack([centres, [[cx, cy]]])
        radii = np.append(radii, r)
        cells.append(_Cell(RBC, cx, cy, r, r * rng.uniform(0.85, 1.0), rng.uniform(0, 180)))
    return cells


def _place_platelets(
    rng: np.random.Generator, h: int, w: int, px_per_um: float, style: SmearStyle, occupied: list[_Cell]
) -> list[_Cell]:
    """Single platelets and small clumps, in the plasma between cells where there is room (as in a
    well-spread smear); a site is drawn a few times before it may land on a cell."""
    n = int(rng.poisson(max(style.platelets_per_rbc * sum(c.cls == RBC for c in occupied), 0.5)))
    xy = np.array([[c.cx, c.cy] for c in occupied], np.float32).reshape(-1, 2)
    radii = np.array([c.rx for c in occupied], np.float32)
    cells: list[_Cell] = []
    while len(cells) < n:
        for _ in range(8):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            if not len(radii) or np.all(np.hypot(xy[:, 0] - cx, xy[:, 1] - cy) > radii + 1.5 * px_per_um):
                break
        members = int(rng.integers(2, 5)) if rng.random() < style.clump_probability else 1
        for _ in range(members):
            r = rng.uniform(1.0, 1.6) * px_per_um
            jitter = 1.6 * px_per_um if members > 1 else 0.0
            cells.append(
                _Cell(PLATELET, cx + rng.normal(0, jitter), cy + rng.normal(0, jitter), r, r * rng.uniform(0.7, 1.0),
                      rng.uniform(0, 180))
            )
    return cells


# --- rendering ---------------------------------------------------------------------------------


def _field_stain(rng: np.random.Generator, style: SmearStyle) -> dict[str, np.ndarray]:
    """This field's plasma colour and densities: a mix of the two real looks, then per-class strength
    and colour jitter (white-cell parts share one jitter, as one stain colours them)."""
    stain = _GREY_STAIN.mix(_WARM_STAIN, float(rng.uniform(*style.stain_mix)))
    amount = style.stain_jitter
    base = rng.uniform(1 - amount, 1 + amount)
    jitter = {cls: (base * rng.uniform(1 - amount / 2, 1 + amount / 2, size=3)).astype(np.float32)
              for cls in (RBC, WBC, PLATELET)}
    stain["rbc"] = stain["rbc"] * jitter[RBC]
    for part in ("nucleus", "cytoplasm", "granules"):
        stain[part] = stain[part] * jitter[WBC]
    stain["platelet"] = stain["platelet"] * jitter[PLATELET]
    stain["plasma"] = stain["plasma"] * rng.uniform(0.94, 1.04) * rng.uniform(0.99, 1.01, size=3).astype(np.float32)
    return stain


def _ellipse_footprint(cell: _Cell, shape: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Bounding-box slices, a boolean footprint and the normalised radius (0 centre .. 1 edge) in it."""
    h, w = shape
    reach = max(cell.rx, cell.ry) + 1
    x0, x1 = max(0, int(np.floor(cell.cx - reach))), min(w, int(np.ceil(cell.cx + reach)) + 1)
    y0, y1 = max(0, int(np.floor(cell.cy - reach))), min(h, int(np.ceil(cell.cy + reach)) + 1)
    if x0 >= x1 or y0 >= y1:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), bool), np.zeros((0, 0), np.float32)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    theta = np.deg2rad(cell.angle)
    dx, dy = xx - cell.cx, yy - cell.cy
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / cell.rx
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / cell.ry
    rho = np.sqrt(u * u + v * v)
    return (slice(y0, y1), slice(x0, x1)), rho <= 1.0, rho


def _paint_cell(
    rng: np.random.Generator,
    cell: _Cell,
    idx: int,
    od: np.ndarray,
    instances: np.ndarray,
    stain: dict[str, np.ndarray],
) -> None:
    region, inside, rho = _ellipse_footprint(cell, instances.shape)
    if not inside.any():
        return
    instances[region][inside] = idx
    target = od[region]
    if cell.cls == RBC:
        # Biconcave disc: thin pale centre, thick rim, slight fall-off at the very edge.
        pallor = rng.uniform(0.3, 0.55)
        thickness = pallor + (1 - pallor) * np.exp(-(((rho - 0.78) / 0.26) ** 2))
        # Where red cells overlap the darker one shows, plus a part of the other (the cells are thin
        # and lie partly side by side), so overlaps darken less than a sum of densities would.
        cell_od = thickness[inside, None] * stain["rbc"]
        below = target[inside]
        target[inside] = np.maximum(below, cell_od) + 0.35 * np.minimum(below, cell_od)
    elif cell.cls == WBC:
        nucleus = _nucleus_mask(rng, cell, region, rho)
        grain = max(0.6, 0.05 * cell.rx)  # chromatin and granules about 0.3 µm across
        texture = cv2.GaussianBlur(rng.uniform(0.75, 1.25, size=inside.shape).astype(np.float32), (0, 0), grain)
        granules = cv2.GaussianBlur(rng.random(inside.shape).astype(np.float32), (0, 0), grain)
        granules = np.clip((granules - granules.mean()) / (granules.std() + 1e-6), 0, None)[..., None]
        cytoplasm = stain["cytoplasm"] + 0.5 * granules * stain["granules"]
        layer = np.where(nucleus[..., None], stain["nucleus"] * texture[..., None], cytoplasm)
        target[inside] = layer[inside]  # white cells occlude what lies beneath
    else:
        granule = 0.7 + 0.5 * (1 - rho)
        target[inside] += granule[inside, None] * stain["platelet"]


def _nucleus_mask(rng: np.random.Generator, cell: _Cell, region: tuple[slice, slice], rho: np.ndarray) -> np.ndarray:
    """Round nucleus (lymphocyte-like) or 2-5 lobes joined by thin strands on an arc (neutrophil-like),
    inside the cell; either fills about half the cell or more, as in the real frames."""
    if cell.nucleus_lobes <= 1:
        extent = rng.uniform(0.65, 0.85)
        return rho <= extent
    ys, xs = region
    yy, xx = np.mgrid[ys.start:ys.stop, xs.start:xs.stop].astype(np.float32)
    out = np.zeros(rho.shape, np.uint8)
    lobe_r = cell.rx * rng.uniform(0.28, 0.36)
    arc = rng.uniform(1.6, 3.2)
    start = rng.uniform(0, 2 * np.pi)
    ring = cell.rx * 0.4
    previous = None
    for k in range(cell.nucleus_lobes):
        a = start + arc * k / max(1, cell.nucleus_lobes - 1)
        lx, ly = cell.cx + ring * np.cos(a), cell.cy + ring * np.sin(a)
        out |= ((xx - lx) ** 2 + (yy - ly) ** 2 <= (lobe_r * rng.uniform(0.85, 1.1)) ** 2).astype(np.uint8)
        centre = (int(round(lx - xs.start)), int(round(ly - ys.start)))
        if previous is not None:
            cv2.line(out, previous, centre, 1, max(1, int(round(0.5 * lobe_r))))
        previous = centre
    return out.astype(bool) & (rho <= 0.92)


def _expose(rng: np.random.Generator, od: np.ndarray, style: SmearStyle, px_per_um: float,
            plasma: np.ndarray) -> np.ndarray:
    """Optical density -> 8-bit BGR camera frame: lighting, blur, noise, optional JPEG."""
    h, w = od.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.normal(0, 1, 2)
    ramp = (gx * (xx / w - 0.5) + gy * (yy / h - 0.5)) / max(1e-6, np.hypot(gx, gy))
    vignette = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * 2
    light = 1.0 - style.lighting_strength * (0.5 * ramp + 0.5 * vignette)
    sigma = rng.uniform(*style.blur_sigma_um) * px_per_um
    if sigma > 0.3:
        od = cv2.GaussianBlur(od, (0, 0), sigma)
    image = plasma * light[..., None] * np.exp(-od)
    image += rng.normal(0, rng.uniform(*style.noise_sigma), size=image.shape).astype(np.float32)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    if style.jpeg_quality is not None:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(style.jpeg_quality)])
        if ok:
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return image
