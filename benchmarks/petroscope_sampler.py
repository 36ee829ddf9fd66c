"""Crops placed by petroscope's class-balanced patch sampler: the second arm of benchmarks/sampler_comparison.py.

petroscope (MIT, Moscow State University; `pip install petroscope==0.0.12`, not a dependency of
the product) keeps, for every frame and class, a map of where a patch holds much of that class,
and each time asks for the class that has had the fewest pixels so far
(`ClassBalancedPatchDataset`). Here it only decides *where* to look: each of its patches becomes a
crop centred on that patch by training.txl_crops.make_crop, so the image, the masks (ignore ring
included), the centre targets and the augmentation are those of the default sampler
(training.txl_crops.CachedCrops), and comparing the two measures the placement alone.

petroscope reads image and mask files: the cached frames and their box masks are written once as
PNGs beside the cache. TXL-PBC frames at the cache scale are about one crop across (150-330 px
for a 269 px crop at the mean scale), so the patch petroscope places is half a crop's side (else
there would be no position to choose).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.contracts.errors import ConfigError, DataError
from runtime.inference.preprocess import IGNORE_INDEX, PreprocessParams
from training.datasets import check_crop
from training.labels import boxes_to_mask
from training.txl_crops import (CACHE_OVERSIZE, Augment, CachedImage, cache_tag, cached_items, make_crop,
                                stack_crops)
from training.txl_pbc import Part

PETROSCOPE_VERSION = "0.0.12"
"""The version the adapter was written against: it reads the sampler's patch history (below)."""


@dataclass(frozen=True)
class BalancerSettings:
    """ClassBalancedPatchDataset's knobs, at petroscope's defaults."""

    balancing_strength: float = 0.8
    """Share of patches placed for a class (the rest: a random frame and place)."""
    class_area_consideration: float = 0.5
    """A frame is chosen for a class with weight (its pixels of the class) ** this."""
    patch_positioning_accuracy: float = 0.5
    acceleration: int = 8
    """Probability maps kept at 1/this resolution."""
    patch_fraction: float = 0.5
    """Patch side as a share of the crop's side (at the cache scale)."""

    def patch_px(self, crop: int) -> int:
        """The patch side in cached-image pixels (petroscope needs at least 32)."""
        return max(32, int(round(crop * CACHE_OVERSIZE * self.patch_fraction)))


def import_balancer() -> type:
    """petroscope's ClassBalancedPatchDataset, imported without the rest of petroscope.

    petroscope.segmentation's package imports its networks (which need torchvision) and
    petroscope.utils logs to ./petroscope.log as it is imported; the balancer needs neither, so
    those two package modules are stood in for (the balancer's own modules load unchanged) and its
    log goes to the standard `logging` logger "petroscope".
    """
    spec = importlib.util.find_spec("petroscope")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the petroscope sampler needs petroscope: pip install petroscope=={PETROSCOPE_VERSION}")
    root = Path(list(spec.submodule_search_locations)[0])
    if "petroscope.segmentation" not in sys.modules:
        package = types.ModuleType("petroscope.segmentation")
        package.__path__ = [str(root / "segmentation")]
        sys.modules["petroscope.segmentation"] = package
    if "petroscope.utils.logger" not in sys.modules:
        log_module = types.ModuleType("petroscope.utils.logger")
        log_module.logger = logging.getLogger("petroscope")  # type: ignore[attr-defined]
        sys.modules["petroscope.utils.logger"] = log_module
    try:
        module = importlib.import_module("petroscope.segmentation.balancer.balancer")
    except ImportError as exc:
        raise ConfigError(f"petroscope's balancer cannot be imported ({exc}); "
                          f"it was used at version {PETROSCOPE_VERSION}") from exc
    return module.ClassBalancedPatchDataset


def write_balancer_files(items: list[CachedImage], folder: Path, margin: int) -> list[tuple[Path, Path]]:
    """Every cached frame as imgs/STEM.png with its box mask as masks/STEM.png (classes, no ignore
    ring: the mask only tells the balancer where each class is), padded by `margin` on every side
    (mask IGNORE_INDEX there). Without the margin a frame hardly larger than a patch can have a
    class (a white cell) wholly inside every patch position, and petroscope 0.0.12 then normalises
    that class's map by zero. Existing files are kept."""
    pairs = []
    for sub in ("imgs", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for item in items:
        image_path, mask_path = folder / "imgs" / f"{item.stem}.png", folder / "masks" / f"{item.stem}.png"
        pairs.append((image_path, mask_path))
        if image_path.is_file() and mask_path.is_file():
            continue
        image = cv2.copyMakeBorder(item.image, margin, margin, margin, margin, cv2.BORDER_REFLECT_101)
        mask = cv2.copyMakeBorder(boxes_to_mask(item.boxes, item.image.shape[:2]), margin, margin, margin, margin,
                                  cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
        if not (cv2.imwrite(str(image_path), image) and cv2.imwrite(str(mask_path), mask)):
            raise DataError(f"{folder}: cannot write the balancer's image and mask files")
    return pairs


class BalancedCrops:
    """A training.loop.BatchSource whose crops are centred on petroscope's class-balanced patches."""

    def __init__(self, items: list[CachedImage], params: PreprocessParams, crop: int, folder: Path, *,
                 augment: Augment = Augment(), seed: int = 0, description: dict | None = None) -> None:
        if not items:
            raise DataError("no cached training images (no image of the split has a red-cell box)")
        check_crop(crop, params)
        self.items, self.params, self.crop, self.augment = items, params, crop, augment
        self.settings = BalancerSettings()
        self.patch = self.settings.patch_px(crop)
        self.margin = self.patch // 2
        balancer = import_balancer()
        knobs = {k: v for k, v in dataclasses.asdict(self.settings).items() if k != "patch_fraction"}
        # No cache_dir: petroscope 0.0.12 stores its maps before raising them to the positioning
        # power and reads them back without it, so a second run would sample differently.
        self.dataset = balancer(write_balancer_files(items, folder, self.margin), patch_size=self.patch,
                                store_history=True, seed=seed, **knobs)
        self.description = description or {}

    def __len__(self) -> int:
        return len(self.items)

    def next_place(self) -> tuple[int, tuple[float, float]]:
        """petroscope's next patch: (frame index, (y, x) of the patch centre in cached-image pixels).

        The sampler returns pixels only; where it cut them is in its accumulator's history (kept
        with store_history=True), emptied before each draw so that it holds just this one.
        """
        history = self.dataset.accum.history
        history.clear()
        self.dataset.item_balanced()
        ((index, [(y, x)]),) = history.items()
        offset = self.patch / 2 - self.margin  # patch centre, less the padding of the balancer's files
        return int(index), (y + offset, x + offset)

    def batch(self, rng: np.random.Generator, size: int):
        places = [self.next_place() for _ in range(size)]
        return stack_crops([make_crop(self.items[index], self.params, self.crop, rng, self.augment, centre=centre)
                            for index, centre in places])

    def describe(self) -> dict[str, Any]:
        return {**self.description, "cache": f"red cells {CACHE_OVERSIZE:g}x the target, crops {self.crop} px",
                "augment": dataclasses.asdict(self.augment),
                "sampler": {"name": "petroscope", "petroscope": PETROSCOPE_VERSION, "patch_px": self.patch,
                            **dataclasses.asdict(self.settings)}}


def petroscope_crops(root: str | Path, params: PreprocessParams, crop: int, cache_dir: str | Path, *,
                   augment: Augment = Augment(), part: Part = Part(), seed: int = 0) -> BalancedCrops:
    """BalancedCrops over a TXL-PBC train split (or a `part` of it), building the caches on first use."""
    from training.txl_pbc import TxlPbcSource

    check_crop(crop, params)
    import_balancer()  # a missing extra fails before the cache is built
    items = cached_items(root, "train", params, cache_dir, part)
    folder = Path(cache_dir) / f"petroscope-{cache_tag('train', params)}-m{BalancerSettings().patch_px(crop) // 2}"
    return BalancedCrops(items, params, crop, folder, augment=augment, seed=seed,
                         description=TxlPbcSource(root, "train", part=part).describe())
