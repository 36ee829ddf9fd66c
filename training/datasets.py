"""Segmentation data: sources of labelled frames, augmentation, and the torch Dataset.

A *source* yields raw labelled frames (`Sample`: BGR uint8 image, class mask, scale information).
The torch `SegmentationDataset` turns them into network tensors through the one preprocessing
(runtime.inference.preprocess): augmentation happens on the raw frame BEFORE that single preprocessing call
(scale jitter perturbs its ScaleDecision), random crops happen after it, on the network grid.
With augmentation and cropping off, a sample's tensor is exactly what the device computes for the
same frame (tests/test_preprocess_parity.py checks this).

Sources are registered by name: "synthetic" (runtime.capture.synthetic) and "txl_pbc" (real smears,
training/txl_pbc.py, imported only when asked for).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import Dataset

from runtime.contracts.classes import RBC
from runtime.contracts.errors import ConfigError, DataError
from runtime.inference.preprocess import (
    IGNORE_INDEX,
    Geometry,
    Prepared,
    PreprocessParams,
    ScaleDecision,
    decide_scale,
    mask_to_network,
    preprocess,
)
from runtime.capture.synthetic import SmearStyle, generate_smear


@dataclass(frozen=True)
class Sample:
    """One labelled frame as a source yields it (frame resolution, before any preprocessing).

    Give at most one of `um_per_px` (calibrated optics) and `rbc_diameter_px` (measured, e.g. the
    median red-cell box); with neither, the preprocessing estimates the scale from the frame.
    `ignore` (bool HxW) marks pixels the loss must not see; `instances` (int32 ids) lets the
    dataset build cell-centre targets.
    """

    image: np.ndarray
    mask: np.ndarray
    um_per_px: float | None = None
    rbc_diameter_px: float | None = None
    ignore: np.ndarray | None = None
    instances: np.ndarray | None = None
    key: str = ""

    def scale_kwargs(self) -> dict[str, float | None]:
        """The scale arguments runtime.inference.preprocess.preprocess takes for this frame."""
        return {"um_per_px": self.um_per_px, "rbc_diameter_px": self.rbc_diameter_px}

    def target_mask(self) -> np.ndarray:
        """The class mask with ignored pixels set to IGNORE_INDEX."""
        if self.ignore is None:
            return self.mask
        return np.where(self.ignore, np.uint8(IGNORE_INDEX), self.mask).astype(np.uint8)


@runtime_checkable
class SegmentationSource(Protocol):
    """What a dataset of labelled frames provides. Sequence-like, deterministic per index."""

    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def describe(self) -> dict[str, Any]:
        """What the model card records about this data (name, split, size, origin)."""
        ...


# --- synthetic ---------------------------------------------------------------------------------

SYNTHETIC_SPLIT_SEEDS = {"train": 0, "val": 1_000_000, "calibration": 2_000_000, "test": 3_000_000}
"""Disjoint seed ranges, so synthetic validation and calibration frames never repeat training ones."""


@dataclass
class SyntheticSource:
    """Seeded synthetic smears (runtime.capture.synthetic) at a random magnification per frame."""

    count: int = 64
    split: str = "train"
    seed: int = 0
    height: int = 256
    width: int = 256
    um_per_px_range: tuple[float, float] = (0.15, 0.3)
    style: SmearStyle = dataclasses.field(default_factory=SmearStyle)
    name: str = "synthetic"

    def __post_init__(self) -> None:
        if self.split not in SYNTHETIC_SPLIT_SEEDS:
            raise ConfigError(f"synthetic: split must be one of {', '.join(SYNTHETIC_SPLIT_SEEDS)}, got {self.split!r}")
        if self.count < 1:
            raise ConfigError(f"synthetic: count must be positive, got {self.count}")
        self._cache: dict[int, Sample] = {}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.count:
            raise IndexError(index)
        if index not in self._cache:
            seed = SYNTHETIC_SPLIT_SEEDS[self.split] + self.seed * 100_000 + index
            lo, hi = self.um_per_px_range
            um_per_px = float(np.random.default_rng(seed).uniform(lo, hi))
            smear = generate_smear(seed, self.height, self.width, um_per_px=um_per_px, style=self.style)
            self._cache[index] = Sample(
                image=smear.image, mask=smear.mask, um_per_px=um_per_px, instances=smear.instances,
                key=f"synthetic-{self.split}-{seed}",
            )
        return self._cache[index]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "split": self.split, "frames": self.count, "seed": self.seed,
            "frame_hw": [self.height, self.width], "um_per_px_range": list(self.um_per_px_range),
            "generator": "runtime.capture.synthetic.generate_smear",
        }


def _build_synthetic(root: str | Path | None, split: str, **kwargs: Any) -> SegmentationSource:
    return SyntheticSource(split=split, **kwargs)


def _build_txl_pbc(root: str | Path | None, split: str, **kwargs: Any) -> SegmentationSource:
    if root is None:
        raise DataError("txl_pbc: a data folder is required (e.g. ../shared/data/txl_pbc)")
    if not Path(root).is_dir():
        raise DataError(f"{root}: data folder does not exist")
    module = importlib.import_module("training.txl_pbc")
    builder = getattr(module, "build_source", None)
    if builder is None:
        raise DataError("txl_pbc: training.txl_pbc provides no build_source(root, split)")
    return builder(root, split, **kwargs)


SOURCES: dict[str, Callable[..., SegmentationSource]] = {
    "synthetic": _build_synthetic,
    "txl_pbc": _build_txl_pbc,
}


def build_source(name: str, root: str | Path | None = None, split: str = "train", **kwargs: Any) -> SegmentationSource:
    """A registered source by name; an unknown name lists the valid ones."""
    try:
        builder = SOURCES[name]
    except KeyError:
        raise ConfigError(f"unknown data source {name!r}; valid: {', '.join(sorted(SOURCES))}") from None
    return builder(root, split, **kwargs)


# --- augmentation (raw frame, before the one preprocessing) -------------------------------------


@dataclass(frozen=True)
class Augment:
    """Training-time variation applied to the raw frame; `Augment.off()` changes nothing."""

    flips: bool = True
    rot90: bool = True
    colour: float = 0.08
    """Per-channel gain and offset jitter (fraction of full scale)."""
    gamma: float = 0.15
    scale_jitter: float = 0.15
    """Log-uniform factor applied to the preprocessing's resampling scale (±15 %)."""

    @classmethod
    def off(cls) -> "Augment":
        return cls(flips=False, rot90=False, colour=0.0, gamma=0.0, scale_jitter=0.0)


def augment_sample(sample: Sample, augment: Augment, rng: np.random.Generator) -> Sample:
    """Flip/rotate the frame and its labels together; jitter colour. Scale jitter is not applied here."""
    image, mask, ignore, instances = sample.image, sample.mask, sample.ignore, sample.instances

    def geo(op: Callable[[np.ndarray], np.ndarray]) -> None:
        nonlocal image, mask, ignore, instances
        image, mask = op(image), op(mask)
        ignore = op(ignore) if ignore is not None else None
        instances = op(instances) if instances is not None else None

    if augment.flips and rng.random() < 0.5:
        geo(lambda a: a[:, ::-1])
    if augment.flips and rng.random() < 0.5:
        geo(lambda a: a[::-1])
    if augment.rot90:
        k = int(rng.integers(0, 4))
        if k:
            geo(lambda a: np.rot90(a, k))
    if augment.colour > 0 or augment.gamma > 0:
        x = image.astype(np.float32) * (1.0 / 255.0)
        if augment.gamma > 0:
            x = x ** float(np.exp(rng.uniform(-augment.gamma, augment.gamma)))
        gain = 1.0 + rng.uniform(-augment.colour, augment.colour, size=3)
        bias = rng.uniform(-augment.colour, augment.colour, size=3) * 0.5
        image = np.clip((x * gain + bias) * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def c(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.ascontiguousarray(a)

    return dataclasses.replace(sample, image=c(image), mask=c(mask), ignore=c(ignore), instances=c(instances))


def jitter_scale(decision: ScaleDecision, params: PreprocessParams, amount: float,
                 rng: np.random.Generator) -> ScaleDecision:
    """Perturb a resampling decision by a log-uniform factor (cells appear a little larger/smaller)."""
    if amount <= 0:
        return decision
    factor = float(np.exp(rng.uniform(-amount, amount)))
    scale = float(np.clip(decision.scale * factor, params.min_scale, params.max_scale))
    return dataclasses.replace(decision, scale=scale)


# --- preprocessing a sample (the training side of the one preprocessing) ------------------------


def prepare_sample(sample: Sample, params: PreprocessParams, scale: ScaleDecision | None = None) -> tuple[Prepared, np.ndarray]:
    """Frame -> (Prepared tensor via runtime.inference.preprocess, class mask on the network grid)."""
    prepared = preprocess(sample.image, params, scale=scale, source=sample.key or "sample", **sample.scale_kwargs())
    return prepared, mask_to_network(sample.target_mask(), prepared.geometry)


def centre_targets(instances: np.ndarray, mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Red-cell centre heat-map on the network grid, from an instance map at frame resolution.

    Uses the same labeller as the real data (training.labels: a Gaussian at each cell's box centre),
    with boxes taken around each visible instance, so synthetic and real targets mean the same.
    """
    from training.labels import boxes_from_instances, centre_heatmap
    from training.txl_pbc import Box

    fy = geometry.resized_hw[0] / geometry.frame_hw[0]
    fx = geometry.resized_hw[1] / geometry.frame_hw[1]
    boxes = [Box(b.cls, b.cx * fx, b.cy * fy, b.w * fx, b.h * fy) for b in boxes_from_instances(instances, mask)]
    return centre_heatmap(boxes, geometry.padded_hw, classes=(RBC,))


def check_crop(crop: int, params: PreprocessParams) -> None:
    """A training crop must tile the network's stride (the U-Net halves it `depth` times)."""
    if crop <= 0 or crop % params.stride:
        raise ConfigError(f"crop must be a positive multiple of the stride ({params.stride}), got {crop}")


class SegmentationDataset(Dataset):
    """Torch view of a source: dict(image CxHxW float32, mask HxW int64, centres HxW float32, has_centres).

    `crop` (a multiple of the stride) takes a random window on the network grid; frames smaller
    than the crop are padded (tensor 0, mask IGNORE_INDEX). Randomness is seeded per (seed, epoch,
    index), so a run is reproducible and a resumed run sees the same data.
    """

    def __init__(
        self,
        source: SegmentationSource,
        params: PreprocessParams,
        *,
        augment: Augment | None = None,
        crop: int | None = None,
        seed: int = 0,
        centres: bool = False,
    ) -> None:
        if crop is not None:
            check_crop(crop, params)
        if len(source) == 0:
            raise DataError(f"data source {source.name!r} is empty")
        self.source, self.params = source, params
        self.augment = augment or Augment.off()
        self.crop, self.seed, self.centres = crop, seed, centres
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sample = augment_sample(self.source[index], self.augment, rng)
        scale = None
        if self.augment.scale_jitter > 0:
            base = decide_scale(self.params, sample.image, **sample.scale_kwargs())
            scale = jitter_scale(base, self.params, self.augment.scale_jitter, rng)
        prepared, mask = prepare_sample(sample, self.params, scale)
        image = prepared.tensor[0]
        has_centres = self.centres and sample.instances is not None
        if has_centres:
            heat = centre_targets(sample.instances, sample.mask, prepared.geometry)
        else:
            heat = np.zeros(mask.shape, np.float32)
        if self.crop:
            image, mask, heat = _random_crop(image, mask, heat, self.crop, rng)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "centres": torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32)),
            "has_centres": torch.tensor(bool(has_centres)),
        }


def _random_crop(image: np.ndarray, mask: np.ndarray, heat: np.ndarray, crop: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = mask.shape
    if h < crop or w < crop:
        ph, pw = max(0, crop - h), max(0, crop - w)
        image = np.pad(image, ((0, 0), (0, ph), (0, pw)))
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
        heat = np.pad(heat, ((0, ph), (0, pw)))
        h, w = mask.shape
    y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    window = (slice(y0, y0 + crop), slice(x0, x0 + crop))
    return image[:, window[0], window[1]], mask[window], heat[window]


class DatasetCrops:
    """A training.loop.BatchSource over a SegmentationDataset (built with `crop`): each pass over
    the frames is a fresh permutation, and the dataset's per-(seed, epoch, index) randomness gives
    every pass new augmentations."""

    def __init__(self, dataset: SegmentationDataset) -> None:
        if not dataset.crop:
            raise ConfigError("DatasetCrops needs a SegmentationDataset built with crop= (batches stack equal sizes)")
        self.dataset = dataset
        self.epoch, self.order, self.cursor = 0, np.zeros(0, np.int64), 0

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        items = []
        for _ in range(size):
            if self.cursor >= len(self.order):
                self.epoch += 1
                self.dataset.set_epoch(self.epoch)
                self.order, self.cursor = rng.permutation(len(self.dataset)), 0
            items.append(self.dataset[int(self.order[self.cursor])])
            self.cursor += 1
        heat = torch.stack([it["centres"] for it in items]) if self.dataset.centres else None
        return torch.stack([it["image"] for it in items]), torch.stack([it["mask"] for it in items]), heat

    def describe(self) -> dict[str, Any]:
        return self.dataset.source.describe()


def subset(dataset: Dataset, indices: list[int]) -> Dataset:
    """The items of `dataset` at `indices` (a torch Subset), so callers outside training need no torch."""
    from torch.utils.data import Subset

    return Subset(dataset, indices)
