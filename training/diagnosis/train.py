"""Fitting: the network (with random input masking so any subset of inputs works), temperature
scaling on a held-out calibration split, and the logistic-regression baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.diagnosis.data import Table
from training.diagnosis.model import DiagnosisNet


@dataclass
class NetConfig:
    hidden: int = 16
    dropout: float = 0.3
    epochs: int = 200
    lr: float = 3e-3
    weight_decay: float = 5e-2
    feature_drop: float = 0.1  # chance of hiding each present input during training
    class_balanced: bool = True  # weight Iraqi classes by inverse frequency
    members: int = 5  # ensemble size
    seed: int = 0


def concat(tables: list[Table]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """values, mask, allowed and per-row weights (each table contributes equally)."""
    values = np.concatenate([t.values for t in tables])
    mask = np.concatenate([t.mask for t in tables])
    allowed = np.concatenate([t.allowed for t in tables])
    weights = np.concatenate([np.full(len(t), 1.0 / len(t)) for t in tables])
    return values, mask, allowed, weights


def _row_weights(tables: list[Table], balanced: bool) -> np.ndarray:
    parts = []
    for t in tables:
        w = np.full(len(t), 1.0 / len(t))
        if balanced and t.allowed.sum(axis=1).max() == 1:  # exact labels: balance the classes
            counts = np.bincount(t.label, minlength=t.allowed.shape[1]).astype(float)
            present = counts > 0
            w = 1.0 / (present.sum() * counts[t.label])
        parts.append(w)
    w = np.concatenate(parts)
    return w / w.sum()


def allowed_nll(logits: torch.Tensor, allowed: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """-log P(label set): for Pima 'not diabetes' the set is {normal, prediabetes}."""
    logp = torch.log_softmax(logits, dim=1)
    ll = torch.logsumexp(logp + torch.log(allowed.clamp_min(1e-12)), dim=1)
    return -(weights * ll).sum()


def fit_network(train: list[Table], calib: list[Table], cfg: NetConfig) -> DiagnosisNet:
    """Train on `train`, then fit the temperature on `calib` (never on validation rows)."""
    torch.manual_seed(cfg.seed)
    values, mask, allowed, _ = concat(train)
    weights = _row_weights(train, cfg.class_balanced)  # tables equal; Iraqi classes equal when balanced
    net = DiagnosisNet(cfg.hidden, cfg.dropout, cfg.members)
    net.fit_scaler(values, mask)
    v, a, w = (torch.from_numpy(x.astype(np.float32)) for x in (values, allowed, weights))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    net.train()
    full = torch.from_numpy(mask.astype(np.float32))
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        m = full * (torch.rand(full.shape, generator=gen) >= cfg.feature_drop)
        empty = m.sum(dim=1) == 0
        m[empty] = full[empty]
        members = net.member_logits(v, m)
        loss = sum(allowed_nll(lg, a, w) for lg in members) / len(members)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    fit_temperature(net, calib)
    return net


def fit_temperature(net: DiagnosisNet, calib: list[Table]) -> float:
    """Temperature scaling: one scalar T minimising the (unweighted) NLL on the calibration rows."""
    values, mask, allowed, weights = concat(calib)
    with torch.no_grad():
        logits = net.logits(torch.from_numpy(values), torch.from_numpy(mask))
    a = torch.from_numpy(allowed)
    w = torch.from_numpy(weights.astype(np.float32))
    w = w / w.sum()
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = allowed_nll(logits / log_t.exp(), a, w)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp().clamp(0.05, 20.0))
    net.temperature.fill_(t)
    return t


def predict(net: DiagnosisNet, table: Table, calibrated: bool = True) -> np.ndarray:
    with torch.no_grad():
        logits = net.logits(torch.from_numpy(table.values), torch.from_numpy(table.mask))
        t = net.temperature if calibrated else 1.0
        return torch.softmax(logits / t, dim=1).numpy()


# ---------------------------------------------------------------------------------------------
# Logistic-regression baseline (per table, median imputation from the training fold)


@dataclass
class LogisticRegression:
    """Multinomial (or binary, as 2 classes) L2-regularised logistic regression fitted with LBFGS.
    Missing values take the training fold's median (all classes pooled: no label leak)."""

    l2: float = 1e-2
    median: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    weight: torch.Tensor | None = None
    columns: np.ndarray | None = None

    def _prepare(self, t: Table) -> torch.Tensor:
        x = np.where(t.mask[:, self.columns] > 0, t.values[:, self.columns], self.median)
        return torch.from_numpy(((x - self.mean) / self.std).astype(np.float32))

    def fit(self, t: Table, n_classes: int, balanced: bool) -> "LogisticRegression":
        self.columns = np.flatnonzero(t.mask.any(axis=0))
        vals, m = t.values[:, self.columns], t.mask[:, self.columns] > 0
        self.median = np.array([np.median(vals[m[:, j], j]) for j in range(vals.shape[1])], dtype=np.float32)
        x = np.where(m, vals, self.median)
        self.mean, self.std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
        xt = self._prepare(t)
        y = torch.from_numpy(t.label)
        counts = np.bincount(t.label, minlength=n_classes).astype(np.float32)
        cw = torch.from_numpy(len(t) / (n_classes * np.maximum(counts, 1))) if balanced else torch.ones(n_classes)
        w = torch.zeros(xt.shape[1] + 1, n_classes, requires_grad=True)
        opt = torch.optim.LBFGS([w], lr=0.5, max_iter=500)
        xb = torch.cat([xt, torch.ones(len(xt), 1)], dim=1)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xb @ w, y, weight=cw) + self.l2 * (w[:-1] ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.weight = w.detach()
        return self

    def predict_proba(self, t: Table) -> np.ndarray:
        xt = self._prepare(t)
        xb = torch.cat([xt, torch.ones(len(xt), 1)], dim=1)
        return torch.softmax(xb @ self.weight, dim=1).numpy()
