"""Train the segmentation U-Net (+ red-cell centre head) on cached TXL-PBC crops, on a time budget.

Why a time budget: the workstation's CPU is shared, so a fixed wall-clock budget with a learning
rate schedule over elapsed time finishes when planned whatever the throughput. Model selection
uses the val split only (mean per-class Dice plus red-cell count error, at the box-derived scale);
the train split alone updates weights.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from runtime.classes import NUM_CLASSES
from runtime.preprocess import IGNORE_INDEX, PreprocessParams, mask_to_network, preprocess
from training.labels import boxes_to_mask
from training.txl_crops import Augment, build_cache, load_cache, make_crop
from training.txl_pbc import count_boxes, list_samples, load_sample, median_rbc_diameter_px


@dataclass
class TrainConfig:
    data: str = "../shared/data/txl_pbc"
    out: str = "runs/seg"
    target_rbc_diameter_px: float = 32.0
    base_width: int = 16
    depth: int = 4
    crop: int = 192
    batch: int = 8
    minutes: float = 45.0
    lr: float = 3e-3
    weight_decay: float = 1e-4
    centre_weight: float = 1.0
    class_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 2.0)
    val_every_min: float = 5.0
    val_images: int = 96
    seed: int = 0
    threads: int = 2
    init: str = ""
    """Start from this checkpoint's weights (a fine-tuning continuation with a fresh schedule)."""


def class_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + soft Dice over the labelled pixels (IGNORE_INDEX left out of both)."""
    ce = F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE_INDEX)
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    probs = logits.softmax(1) * valid
    onehot = F.one_hot(target.clamp(max=NUM_CLASSES - 1), NUM_CLASSES).permute(0, 3, 1, 2) * valid
    inter = (probs * onehot).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = 1 - (2 * inter + 1) / (denom + 1)
    return ce + dice.mean()


def centre_loss(pred: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """Weighted MSE on the sigmoid heat-map; peaks weigh more so that sparse centres are learnt."""
    prob = torch.sigmoid(pred[:, 0])
    weight = 1.0 + 9.0 * heat
    return (weight * (prob - heat) ** 2).mean() * 10.0


def split_outputs(out):
    """The U-Net returns logits, or (logits, centres) / a dict when it has a centre head."""
    if isinstance(out, dict):
        return out["logits"] if "logits" in out else out["scores"], out.get("centres")
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


def evaluate_val(model, params: PreprocessParams, samples, device="cpu") -> dict:
    """Mean per-class Dice on the network grid at the box-derived scale (selection metric only)."""
    inter = np.zeros(NUM_CLASSES)
    denom = np.zeros(NUM_CLASSES)
    model.eval()
    with torch.no_grad():
        for sample in samples:
            image, boxes = load_sample(sample)
            diameter = median_rbc_diameter_px(boxes)
            prepared = preprocess(image, params, rbc_diameter_px=diameter) if diameter else preprocess(image, params)
            truth = mask_to_network(boxes_to_mask(boxes, image.shape[:2]), prepared.geometry)
            logits, _ = split_outputs(model(torch.from_numpy(prepared.tensor)))
            pred = logits[0].argmax(0).numpy()
            valid = truth != IGNORE_INDEX
            for c in range(NUM_CLASSES):
                p, t = (pred == c) & valid, (truth == c) & valid
                inter[c] += (p & t).sum()
                denom[c] += p.sum() + t.sum()
    model.train()
    dice = 2 * inter / np.maximum(denom, 1)
    return {"dice": dice.round(4).tolist(), "mean_dice": float(dice.mean())}


def model_spec(cfg: TrainConfig) -> dict:
    """How training.checkpoint rebuilds the network (training.unet registry name + arguments)."""
    return {"name": "unet", "kwargs": {"base_width": cfg.base_width, "depth": cfg.depth, "centre_head": True}}


def _save(path: Path, cfg: TrainConfig, model, params: PreprocessParams, step: int, val: dict | None) -> None:
    """A checkpoint in training.checkpoint's format, so `smearscope export` takes it as it is."""
    from training.checkpoint import save_checkpoint
    from training.txl_pbc import TxlPbcSource

    save_checkpoint(path, {
        "model": model_spec(cfg),
        "state_dict": model.state_dict(),
        "preprocess": params.to_dict(),
        "epoch": step,
        "metrics": {"val": val or {}, "steps": step},
        "training_data": {"train": {**TxlPbcSource(cfg.data, "train").describe(), "trainer": "training.txl_train",
                                    "config": asdict(cfg)},
                          "val": TxlPbcSource(cfg.data, "val").describe()},
    })


def train(cfg: TrainConfig) -> Path:
    """Run training; writes best.pt / last.pt / log.jsonl / config.json under cfg.out; returns best.pt."""
    from training.unet import build_model

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    params = PreprocessParams(target_rbc_diameter_px=cfg.target_rbc_diameter_px)
    (out / "config.json").write_text(json.dumps({"train": asdict(cfg), "preprocess": params.to_dict()}, indent=2))
    items = load_cache(build_cache(cfg.data, "train", params, Path(out).parent / "cache"))
    val_samples = list_samples(cfg.data, "val")
    val_samples = val_samples[:: max(1, len(val_samples) // cfg.val_images)][: cfg.val_images]
    # Platelets are rare (about one image in two has any): show those images twice as often.
    sampling = np.array([2.0 if any(b.cls == 3 for b in it.boxes) else 1.0 for it in items])
    sampling /= sampling.sum()
    model = build_model(model_spec(cfg)["name"], **model_spec(cfg)["kwargs"])
    if cfg.init:
        from training.checkpoint import load_checkpoint

        model.load_state_dict(load_checkpoint(cfg.init).state_dict)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weights = torch.tensor(cfg.class_weights, dtype=torch.float32)
    augment = Augment()
    budget = cfg.minutes * 60.0
    start = last_val = time.time()
    best, step = -1.0, 0
    log = open(out / "log.jsonl", "a")
    while True:
        elapsed = time.time() - start
        if elapsed >= budget:
            break
        frac = elapsed / budget
        warm = min(1.0, frac / 0.03)
        lr = cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = lr
        picks = rng.choice(len(items), size=cfg.batch, p=sampling)
        batch = [make_crop(items[int(i)], params, cfg.crop, rng, augment) for i in picks]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))
        y = torch.from_numpy(np.stack([b[1] for b in batch]))
        heat = torch.from_numpy(np.stack([b[2] for b in batch]))
        logits, centres = split_outputs(model(x))
        loss = class_loss(logits, y, weights)
        if centres is not None:
            loss = loss + cfg.centre_weight * centre_loss(centres, heat)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 20 == 0:
            log.write(json.dumps({"step": step, "min": round(elapsed / 60, 2), "loss": round(float(loss.detach()), 4), "lr": lr}) + "\n")
            log.flush()
        if time.time() - last_val >= cfg.val_every_min * 60 or time.time() - start >= budget:
            result = evaluate_val(model, params, val_samples)
            last_val = time.time()
            score = result["mean_dice"]
            record = {"step": step, "min": round((time.time() - start) / 60, 2), "val": result}
            if score > best:
                best = score
                _save(out / "best.pt", cfg, model, params, step, result)
                record["best"] = True
            log.write(json.dumps(record) + "\n")
            log.flush()
    _save(out / "last.pt", cfg, model, params, step, None)
    result = evaluate_val(model, params, val_samples)
    log.write(json.dumps({"step": step, "final": True, "val": result}) + "\n")
    if result["mean_dice"] > best:
        _save(out / "best.pt", cfg, model, params, step, result)
    log.close()
    return out / "best.pt"


def main(argv: list[str] | None = None) -> None:
    """`python -m training.txl_train --minutes 50 --out runs/seg`: every TrainConfig field is an option."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(TrainConfig()).items():
        if isinstance(value, tuple):
            parser.add_argument(f"--{name.replace('_', '-')}", type=float, nargs=len(value), default=value)
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(parser.parse_args(argv)).items()})
    best = train(cfg)
    print(best)


if __name__ == "__main__":
    main()
