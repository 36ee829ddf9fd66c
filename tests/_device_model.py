"""A real segmentation model for the device tests: trained for a few seconds, exported to ONNX.

The tests need a real network run by the real ONNX Runtime, with a real card (sha256, preprocess
parameters), before the shipped model exists. This trains a small fully-convolutional net on
synthetic smears passed through the one preprocessing, exports it with torch.onnx and writes its
card. Built once and cached under the temp folder, keyed by this file's own hash, so a change
here builds a fresh model and an unchanged helper reuses the last one (after checking its card).
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from runtime.classes import CLASS_NAMES, NUM_CLASSES
from runtime.errors import ModelError
from runtime.modelcard import ModelCard, load_card, sha256_file
from runtime.preprocess import PreprocessParams, mask_to_network, preprocess
from runtime.synthetic import generate_smear

UM_PER_PX = 0.25
PARAMS = PreprocessParams(target_rbc_diameter_px=24.0, stride=8)


def _training_batch(seeds: range) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for seed in seeds:
        smear = generate_smear(seed, height=160, width=160, um_per_px=UM_PER_PX)
        prepared = preprocess(smear.image, PARAMS, um_per_px=UM_PER_PX)
        xs.append(prepared.tensor[0])
        ys.append(mask_to_network(smear.mask, prepared.geometry))
    return np.stack(xs), np.stack(ys).astype(np.int64)


@functools.lru_cache(maxsize=1)
def trained_model_path() -> Path:
    """The cached model if its card still verifies, else a freshly trained one."""
    key = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"smearscope-device-test-model-{key}"
    path = cache / "segmentation.test.onnx"
    try:
        load_card(path)
        return path
    except ModelError:
        pass
    building = Path(tempfile.mkdtemp(prefix="smearscope-device-test-model-"))
    _train_and_export(building / path.name)
    try:
        building.rename(cache)
    except OSError:  # another process finished first; use its model
        shutil.rmtree(building, ignore_errors=True)
    return path


def _train_and_export(path: Path, steps: int = 100) -> None:
    """Train, export and card a small model at `path` (its card beside it)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(2)
    x, y = _training_batch(range(12))
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=4, dilation=4), nn.ReLU(),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, NUM_CLASSES, 1),
    )
    weights = torch.tensor([0.5, 1.0, 3.0, 6.0])
    loss_fn = nn.CrossEntropyLoss(weight=weights, ignore_index=255)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (4,))
        opt.zero_grad()
        loss = loss_fn(net(xt[idx]), yt[idx])
        loss.backward()
        opt.step()
    net.eval()

    torch.onnx.export(
        net, (torch.zeros(1, 3, 64, 64),), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}},
        opset_version=17, dynamo=False,
    )
    card = ModelCard(
        name="segmentation-test", version="0.0.1", sha256=sha256_file(path), task="segmentation",
        classes=list(CLASS_NAMES), input_name="input", input_shape=[1, 3, "height", "width"],
        output_names=["logits"], opset=17, preprocess=PARAMS,
        training_data={"source": "synthetic", "frames": 12, "steps": steps, "final_loss": round(loss.item(), 4)},
    )
    card.write(path.with_suffix(".json"))
