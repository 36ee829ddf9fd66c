"""Distillation: a larger exported model's class probabilities as extra soft targets.

Box-derived labels are ellipses, and the training loss skips a ring around every outline; a
teacher's probabilities say something about every pixel, including those rings, and carry its
uncertainty between touching cells. The teacher runs in ONNX Runtime (its fp32 export), so no
PyTorch checkpoint of it is needed, and it must share the student's preprocessing, because both see
the same crops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from runtime.contracts.errors import ConfigError
from runtime.contracts.modelcard import load_card
from runtime.inference.preprocess import PreprocessParams
from runtime.inference.session import SessionOptions, create_session


class OnnxTeacher:
    """Class probabilities (N x C x H x W) of an exported model for a batch of training crops."""

    def __init__(self, model_path: str | Path, params: PreprocessParams, threads: int = 0) -> None:
        card = load_card(model_path)
        if card.preprocess != params:
            raise ConfigError(f"{model_path}: the teacher's preprocessing differs from the student's")
        self.path = Path(model_path)
        self.sha256 = card.sha256
        self.session = create_session(model_path, SessionOptions(intra_op_threads=threads, warmup=False))
        self.input_name = card.input_name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.session.run(None, {self.input_name: np.ascontiguousarray(images.numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(logits).softmax(dim=1)


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of KL(teacher || student) on the class axis."""
    log_student = F.log_softmax(student_logits, dim=1)
    return (teacher_probs * (teacher_probs.clamp_min(1e-8).log() - log_student)).sum(dim=1).mean()
