"""Training losses: cross-entropy + soft Dice for the classes, weighted squared error for the centre heat-map."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from runtime.inference.preprocess import IGNORE_INDEX


class SegmentationLoss(nn.Module):
    """Cross-entropy (pixels marked IGNORE_INDEX skipped, optional class weights) + soft Dice.

    Cross-entropy teaches every pixel; the Dice term keeps small classes (platelets) from being
    drowned by plasma and red cells.
    """

    def __init__(self, class_weights: Sequence[float] | None = None, dice_weight: float = 1.0, eps: float = 1.0) -> None:
        super().__init__()
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weight, persistent=False)
        self.dice_weight, self.eps = dice_weight, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=IGNORE_INDEX)
        if self.dice_weight == 0:
            return ce
        return ce + self.dice_weight * soft_dice_loss(logits, target, self.eps)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of soft Dice, computed over the batch's valid (non-ignored) pixels."""
    num_classes = logits.shape[1]
    valid = (target != IGNORE_INDEX).unsqueeze(1).to(logits.dtype)
    probs = logits.softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).to(logits.dtype) * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def centre_heatmap_loss(logits: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """Weighted squared error between the sigmoid of the centre logits (N x 1 x H x W) and a Gaussian
    heat-map (N x H x W, peaks near 1). Peaks weigh ten times more than plasma, so the few centre
    pixels are learnt; counting reads peaks of the same sigmoid (runtime.analysis.counting)."""
    prob = torch.sigmoid(logits[:, 0])
    weight = 1.0 + 9.0 * heat
    return (weight * (prob - heat) ** 2).mean() * 10.0
