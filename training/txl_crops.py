"""Cached, scale-normalised TXL-PBC images for fast training on a CPU.

Decoding JPEGs and resampling them every step costs as much as a small network's forward pass,
so each training image is resampled once, through the one preprocessing's geometry, to a red-cell
size a little above the network's target (`CACHE_OVERSIZE`). A sample is then a random crop of
that cache, shrunk by a random factor (scale augmentation), with its masks drawn from the boxes at
the final scale (so they are exact at any scale). The tensor comes from runtime.inference.preprocess.normalize.
`CachedCrops` serves these crops to the training loop (training.loop.BatchSource).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.contracts.classes import CLASS_NAMES, PLATELET
from runtime.contracts.errors import ConfigError, DataError
from runtime.inference.preprocess import PreprocessParams, normalize, plan_geometry, resample_frame
from training.datasets import check_crop
from training.labels import boxes_to_mask, centre_heatmap, whole_cells
from training.txl_pbc import Box, Part, list_samples, load_sample, median_rbc_diameter_px

CACHE_OVERSIZE = 1.4
"""Cached images hold red cells this many times the network's target size, so that scale
augmentation shrinks (never enlarges) them."""


@dataclass
class CachedImage:
    """One image resampled to `CACHE_OVERSIZE` x the target red-cell size, with its scaled boxes."""

    stem: str
    image: np.ndarray  # HxWx3 uint8 BGR
    boxes: list[Box]


def _scale_boxes(boxes: list[Box], factor: float) -> list[Box]:
    return [Box(b.cls, b.cx * factor, b.cy * factor, b.w * factor, b.h * factor) for b in boxes]


def cache_tag(split: str, params: PreprocessParams) -> str:
    """The name of a split's cache at a network scale (the .npz, and folders derived from it)."""
    return f"{split}-d{params.target_rbc_diameter_px:g}-x{CACHE_OVERSIZE:g}"


def build_cache(root: str | Path, split: str, params: PreprocessParams, cache_dir: str | Path) -> Path:
    """Resample every image of `split` once and store them in one .npz (+ boxes as JSON). Idempotent."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = cache_tag(split, params)
    npz_path, json_path = cache_dir / f"{tag}.npz", cache_dir / f"{tag}.json"
    if npz_path.is_file() and json_path.is_file():
        return npz_path
    arrays, meta = {}, []
    for sample in list_samples(root, split):
        image, boxes = load_sample(sample)
        diameter = median_rbc_diameter_px(boxes)
        if diameter is None:  # no red cell to measure the magnification by: skip rather than guess
            continue
        scale = CACHE_OVERSIZE * params.target_rbc_diameter_px / diameter
        geometry = plan_geometry(image.shape[:2], scale, 1)
        arrays[sample.stem] = resample_frame(image, geometry)
        factor_y = geometry.resized_hw[0] / image.shape[0]
        factor_x = geometry.resized_hw[1] / image.shape[1]
        factor = 0.5 * (factor_x + factor_y)
        meta.append({"stem": sample.stem, "boxes": [[b.cls, b.cx * factor_x, b.cy * factor_y, b.w * factor_x,
                                                      b.h * factor_y] for b in boxes], "factor": factor})
    np.savez(npz_path, **arrays)
    json_path.write_text(json.dumps(meta))
    return npz_path


def load_cache(npz_path: str | Path) -> list[CachedImage]:
    npz_path = Path(npz_path)
    meta = json.loads(npz_path.with_suffix(".json").read_text())
    with np.load(npz_path) as data:
        return [CachedImage(m["stem"], data[m["stem"]], [Box(int(c), x, y, w, h) for c, x, y, w, h in m["boxes"]])
                for m in meta]


@dataclass(frozen=True)
class Augment:
    """Training-time variation; `none()` gives the plain preprocessing (used by the parity check)."""

    scale_range: tuple[float, float] = (0.75, 1.3)  # relative to the target red-cell size
    flip: bool = True
    colour_jitter: float = 0.08
    ignore_ring_px: int = 2
    ring_classes: tuple[str, ...] = ("rbc", "wbc", "platelet")
    """Classes whose outlines get the ignore ring (training.labels.boxes_to_mask)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.ring_classes) - set(CLASS_NAMES[1:]))
        if unknown:
            raise ConfigError(f"ring classes: unknown {', '.join(unknown)} (choose from {', '.join(CLASS_NAMES[1:])})")

    @property
    def ring_class_ids(self) -> tuple[int, ...]:
        return tuple(CLASS_NAMES.index(name) for name in self.ring_classes)

    @classmethod
    def none(cls) -> "Augment":
        return cls(scale_range=(1.0, 1.0), flip=False, colour_jitter=0.0, ignore_ring_px=0)


def make_crop(item: CachedImage, params: PreprocessParams, crop: int, rng: np.random.Generator,
              augment: Augment, centre: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tensor CxHxW float32, mask HxW int64 with IGNORE_INDEX, centre heat-map HxW float32).

    The crop lies at random, or as close to centred on `centre` ((y, x) in cached-image pixels)
    as the frame allows, so a sampler that chooses where to look still gets every target from here.
    """
    lo, hi = augment.scale_range
    rel = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    factor = rel / CACHE_OVERSIZE
    geometry = plan_geometry(item.image.shape[:2], factor, 1)
    image = resample_frame(item.image, geometry)
    fy, fx = geometry.resized_hw[0] / item.image.shape[0], geometry.resized_hw[1] / item.image.shape[1]
    boxes = [Box(b.cls, b.cx * fx, b.cy * fy, b.w * fx, b.h * fy) for b in item.boxes]
    h, w = image.shape[:2]
    cells = whole_cells(boxes, (h, w))  # masks show cut cells whole up to the frame's edge; centres stay
    if h < crop or w < crop:  # reflect-pad small images; padded pixels are ignored by the loss
        pad_h, pad_w = max(0, crop - h), max(0, crop - w)
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
    if centre is None:
        y0 = int(rng.integers(0, image.shape[0] - crop + 1))
        x0 = int(rng.integers(0, image.shape[1] - crop + 1))
    else:
        y0 = int(np.clip(round(centre[0] * fy - crop / 2), 0, image.shape[0] - crop))
        x0 = int(np.clip(round(centre[1] * fx - crop / 2), 0, image.shape[1] - crop))
    image = image[y0:y0 + crop, x0:x0 + crop]
    boxes, cells = ([Box(b.cls, b.cx - x0, b.cy - y0, b.w, b.h) for b in group] for group in (boxes, cells))
    mask = boxes_to_mask(cells, (crop, crop), augment.ignore_ring_px, augment.ring_class_ids).astype(np.int64)
    mask[max(0, h - y0):, :] = 255
    mask[:, max(0, w - x0):] = 255
    heat = centre_heatmap(boxes, (crop, crop))
    if augment.colour_jitter > 0:
        gain = 1.0 + rng.uniform(-augment.colour_jitter, augment.colour_jitter, size=3)
        bias = rng.uniform(-augment.colour_jitter, augment.colour_jitter, size=3) * 255
        image = np.clip(image.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    if augment.flip:
        if rng.random() < 0.5:
            image, mask, heat = image[:, ::-1], mask[:, ::-1], heat[:, ::-1]
        if rng.random() < 0.5:
            image, mask, heat = image[::-1], mask[::-1], heat[::-1]
        if rng.random() < 0.5:
            image, mask, heat = image.transpose(1, 0, 2), mask.T, heat.T
    tensor = normalize(np.ascontiguousarray(image), params)
    return tensor, np.ascontiguousarray(mask), np.ascontiguousarray(heat)


class CachedCrops:
    """A training.loop.BatchSource of random crops of cached TXL-PBC images.

    Platelets are rare (about one image in two has any), so images with a platelet box are drawn
    `platelet_boost` times as often as the others.
    """

    def __init__(self, items: list[CachedImage], params: PreprocessParams, crop: int, *,
                 augment: Augment = Augment(), platelet_boost: float = 2.0, description: dict | None = None) -> None:
        if not items:
            raise DataError("no cached training images (no image of the split has a red-cell box)")
        check_crop(crop, params)
        self.items, self.params, self.crop, self.augment = items, params, crop, augment
        self.platelet_boost = platelet_boost
        weights = np.array([platelet_boost if any(b.cls == PLATELET for b in it.boxes) else 1.0 for it in items])
        self.sampling = weights / weights.sum()
        self.description = description or {}

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, rng: np.random.Generator, size: int):
        picks = rng.choice(len(self.items), size=size, p=self.sampling)
        return stack_crops([make_crop(self.items[int(i)], self.params, self.crop, rng, self.augment) for i in picks])

    def describe(self) -> dict:
        return {**self.description, "cache": f"red cells {CACHE_OVERSIZE:g}x the target, crops {self.crop} px",
                "augment": dataclasses.asdict(self.augment), "sampler": f"frames (platelet frames x{self.platelet_boost:g}, crops at random)"}


def stack_crops(crops: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """make_crop results -> the (images, masks, centre heat-maps) tensors of a training.loop.BatchSource."""
    import torch

    return tuple(torch.from_numpy(np.stack([c[k] for c in crops])) for k in range(3))


def cached_items(root: str | Path, split: str, params: PreprocessParams, cache_dir: str | Path,
                 part: Part = Part()) -> list[CachedImage]:
    """The cached images of a split's `part` (the cache always holds the whole split), built on first use."""
    keep = {sample.stem for sample in list_samples(root, split, part)}
    return [item for item in load_cache(build_cache(root, split, params, cache_dir)) if item.stem in keep]


def cached_crops(root: str | Path, params: PreprocessParams, crop: int, cache_dir: str | Path, *,
                 split: str = "train", augment: Augment = Augment(), part: Part = Part()) -> CachedCrops:
    """CachedCrops over a TXL-PBC split (or a `part` of it), building the cache on first use."""
    from training.txl_pbc import TxlPbcSource

    check_crop(crop, params)  # before the cache is built, not after
    items = cached_items(root, split, params, cache_dir, part)
    return CachedCrops(items, params, crop, augment=augment, description=TxlPbcSource(root, split, part=part).describe())
