"""Stratified cross-validation of the network beside the logistic-regression baseline and the
guideline rule (the runtime engine itself), all in one run on the same folds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from runtime.diagnosis import InvalidInputs, diagnose
from runtime.diagnosis.features import FEATURES
from training.diagnosis.data import Table
from training.diagnosis.metrics import (
    accuracy, balanced_accuracy, binary_ece, roc_auc, top_label_ece,
)
from training.diagnosis.train import LogisticRegression, NetConfig, fit_network, predict

STATUS_TO_CLASS = {"normal": 0, "prediabetes": 1, "diabetes": 2}


def stratified_folds(label: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index per row: each class shuffled and dealt round-robin, so every fold keeps the
    class proportions."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(label), np.int64)
    for c in np.unique(label):
        idx = rng.permutation(np.flatnonzero(label == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def split_calibration(t: Table, fraction: float, seed: int) -> tuple[Table, Table]:
    """Stratified (fit, calibrate) split of a training table."""
    fold = stratified_folds(t.label, max(2, round(1 / fraction)), seed)
    return t.subset(np.flatnonzero(fold != 0)), t.subset(np.flatnonzero(fold == 0))


def rule_predictions(t: Table) -> tuple[np.ndarray, np.ndarray]:
    """The guideline engine on the table's glucose/HbA1c: (class per row, score for AUC).

    Pima: WHO 2-h OGTT rule (status diabetes vs not; score = 2-h glucose).
    Iraqi: ADA HbA1c rule (normal / prediabetes / diabetes; score = HbA1c). A value outside the
    plausible range (runtime.contracts.plausible) is refused by the engine, as on the device: such a
    row keeps class 0, like a missing value."""
    if t.name == "pima":
        test, feat, guideline = "ogtt_2h_mmol_l", "ogtt_2h_mmol_l", "who"
    else:
        test, feat, guideline = "hba1c_pct", "hba1c_pct", "ada"
    j = FEATURES.index(feat)
    classes = np.zeros(len(t), np.int64)
    for i in range(len(t)):
        if t.mask[i, j] == 0:
            continue
        try:
            status = diagnose({test: float(t.values[i, j]), "pregnant": 0}, guideline=guideline).status
        except InvalidInputs:
            continue
        classes[i] = STATUS_TO_CLASS.get(status, 0)
    return classes, t.values[:, j] * t.mask[:, j]


@dataclass
class CVResult:
    folds: int
    seed: int
    seconds: float
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    temperatures: list[float] = field(default_factory=list)

    def table(self) -> str:
        """The metrics as an aligned text table."""
        cols = ["pima_auc", "pima_accuracy", "pima_ece", "iraqi_balanced_accuracy", "iraqi_accuracy", "iraqi_ece"]
        heads = ["Pima AUC", "Pima acc", "Pima ECE", "Iraqi bal.acc", "Iraqi acc", "Iraqi ECE"]
        lines = [f"{'method':<38}" + "".join(f"{h:>14}" for h in heads)]
        for name, m in self.metrics.items():
            lines.append(f"{name:<38}" + "".join(f"{m[c]:>14.3f}" if c in m else f"{'-':>14}" for c in cols))
        return "\n".join(lines)


def _evaluate(name: str, result: CVResult, pima: Table, iraqi: Table,
              p_pima: np.ndarray, p_iraqi: np.ndarray) -> None:
    """Pima: AUC/accuracy/ECE of P(diabetes); Iraqi: balanced accuracy/accuracy/top-label ECE."""
    pd = p_pima[:, -1]
    pred_iraqi = p_iraqi.argmax(axis=1)
    result.metrics[name] = {
        "pima_auc": roc_auc(pima.label, pd),
        "pima_accuracy": accuracy(pima.label, (pd >= 0.5).astype(int)),
        "pima_ece": binary_ece(pima.label, pd),
        "iraqi_balanced_accuracy": balanced_accuracy(iraqi.label, pred_iraqi, 3),
        "iraqi_accuracy": accuracy(iraqi.label, pred_iraqi),
        "iraqi_ece": top_label_ece(iraqi.label, p_iraqi),
    }


def cross_validate(pima: Table, iraqi: Table, cfg: NetConfig, folds: int = 5, seed: int = 0,
                   progress: Callable[[int], None] | None = None) -> CVResult:
    start = time.perf_counter()
    result = CVResult(folds, seed, 0.0)
    f_pima, f_iraqi = stratified_folds(pima.label, folds, seed), stratified_folds(iraqi.label, folds, seed + 1)
    oof = {k: (np.zeros((len(pima), 3)), np.zeros((len(iraqi), 3)))
           for k in ("network (calibrated)", "network (uncalibrated)", "logistic regression")}
    for k in range(folds):
        tr_p, va_p = pima.subset(np.flatnonzero(f_pima != k)), np.flatnonzero(f_pima == k)
        tr_i, va_i = iraqi.subset(np.flatnonzero(f_iraqi != k)), np.flatnonzero(f_iraqi == k)
        fit_p, cal_p = split_calibration(tr_p, 0.2, seed + k)
        fit_i, cal_i = split_calibration(tr_i, 0.2, seed + k)
        net = fit_network([fit_p, fit_i], [cal_p, cal_i], NetConfig(**{**cfg.__dict__, "seed": cfg.seed + k}))
        result.temperatures.append(float(net.temperature))
        for name, calibrated in (("network (calibrated)", True), ("network (uncalibrated)", False)):
            oof[name][0][va_p] = predict(net, pima.subset(va_p), calibrated)
            oof[name][1][va_i] = predict(net, iraqi.subset(va_i), calibrated)
        lr_p = LogisticRegression().fit(tr_p, 2, balanced=False).predict_proba(pima.subset(va_p))
        oof["logistic regression"][0][va_p] = np.column_stack([lr_p[:, 0], np.zeros(len(va_p)), lr_p[:, 1]])
        oof["logistic regression"][1][va_i] = LogisticRegression().fit(tr_i, 3, balanced=cfg.class_balanced) \
            .predict_proba(iraqi.subset(va_i))
        if progress:
            progress(1)
    for name, (pp, pi) in oof.items():
        _evaluate(name, result, pima, iraqi, pp, pi)
    rule_p, score_p = rule_predictions(pima)
    rule_i, _ = rule_predictions(iraqi)
    result.metrics["guideline rule (WHO 2-h / ADA HbA1c)"] = {
        "pima_auc": roc_auc(pima.label, score_p),
        "pima_accuracy": accuracy(pima.label, (rule_p == 2).astype(int)),
        "iraqi_balanced_accuracy": balanced_accuracy(iraqi.label, rule_i, 3),
        "iraqi_accuracy": accuracy(iraqi.label, rule_i),
    }
    result.seconds = time.perf_counter() - start
    return result
