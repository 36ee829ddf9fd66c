"""The diagnosis network: an MLP over (standardised value x mask, mask) with the standardisation,
log transforms and calibration temperature inside the module, so the exported graph takes raw
values in canonical units and returns calibrated probabilities."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from runtime.diagnosis.features import CLASSES, FEATURES
from runtime.diagnosis.tables import CUTPOINTS
from runtime.diagnosis.units import MMOL_L, PERCENT

#: Right-skewed features modelled on a log scale.
LOG_FEATURES = ("insulin_2h_uu_ml", "diabetes_pedigree", "urea_mmol_l", "creatinine_umol_l",
                "triglycerides_mmol_l", "vldl_mmol_l")


def guideline_knots() -> list[tuple[str, float]]:
    """(feature, cut-point) for the non-pregnant HbA1c and 2-h glucose cut-points of all three
    guidelines, taken from the runtime's table: the network sees "value >= cut-point" indicators
    (a piecewise encoding with knots where clinicians put them) beside the value itself."""
    pairs = {("hba1c_pct", c.thresholds[PERCENT]) for c in CUTPOINTS if c.test == "hba1c" and not c.pregnant}
    pairs |= {("ogtt_2h_mmol_l", c.thresholds[MMOL_L]) for c in CUTPOINTS if c.test == "ogtt_2h" and not c.pregnant}
    return sorted(pairs)


class DiagnosisNet(nn.Module):
    def __init__(self, hidden: int = 64, dropout: float = 0.1, members: int = 1) -> None:
        super().__init__()
        n = len(FEATURES)
        knots = guideline_knots()
        self.knot_features = [f for f, _ in knots]
        self.register_buffer("knot_index", torch.tensor([FEATURES.index(f) for f, _ in knots]))
        self.register_buffer("knot_value", torch.tensor([k for _, k in knots], dtype=torch.float32))
        width = 2 * n + len(knots)
        self.register_buffer("log_mask", torch.tensor([f in LOG_FEATURES for f in FEATURES], dtype=torch.float32))
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))
        self.register_buffer("temperature", torch.ones(1))
        # `members` independently initialised MLPs whose logits are averaged (a small ensemble);
        # each has a linear path beside it: logistic regression is a strong baseline on these
        # tables, the MLP only has to add what is not linear.
        self.bodies = nn.ModuleList(nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, len(CLASSES)),
        ) for _ in range(members))
        self.linears = nn.ModuleList(nn.Linear(width, len(CLASSES)) for _ in range(members))

    def transform(self, values: torch.Tensor) -> torch.Tensor:
        logged = torch.log1p(torch.clamp(values, min=0.0))
        return self.log_mask * logged + (1.0 - self.log_mask) * values

    def fit_scaler(self, values: np.ndarray, mask: np.ndarray) -> None:
        """Mean/std of each feature over the rows where it is present (training rows only)."""
        t = self.transform(torch.from_numpy(values)).numpy()
        m = mask.astype(bool)
        mean = np.array([t[m[:, j], j].mean() if m[:, j].any() else 0.0 for j in range(t.shape[1])])
        std = np.array([t[m[:, j], j].std() if m[:, j].sum() > 1 else 1.0 for j in range(t.shape[1])])
        self.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        self.std.copy_(torch.from_numpy(np.maximum(std, 1e-3).astype(np.float32)))

    def member_logits(self, values: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        z = (self.transform(values) - self.mean) / self.std * mask
        present = mask[:, self.knot_index]
        above = (values[:, self.knot_index] >= self.knot_value).to(values.dtype) * present
        h = torch.cat([z, mask, above], dim=1)
        return [body(h) + linear(h) for body, linear in zip(self.bodies, self.linears)]

    def logits(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        members = self.member_logits(values, mask)
        return torch.stack(members).mean(dim=0) if len(members) > 1 else members[0]

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities [N, 3]."""
        return torch.softmax(self.logits(values, mask) / self.temperature, dim=1)
