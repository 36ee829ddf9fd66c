"""Train, cross-validate, export and card the diagnosis network in one reproducible run.

    python -m export.diagnosis            # defaults: ../shared/data/diabetes -> models/diagnosis.onnx

Steps: stratified k-fold cross-validation of the network beside the logistic-regression baseline
and the guideline rule (printed as a table), then the final network on all rows (temperature
fitted on a held-out stratified fifth), ONNX export, a parity check of ONNX Runtime against
PyTorch on every row, and the model card with the cross-validated metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import torch

from export.card import CardContent, write_card
from export.compare import check_outputs
from export.onnx_export import export_onnx
from runtime.diagnosis.features import CLASSES, FEATURES
from runtime.contracts.modelcard import ModelCard, default_models_dir
from runtime.inference.session import SessionOptions, create_session
from training.diagnosis.crossval import CVResult, cross_validate, split_calibration
from training.diagnosis.data import Table, load_tables
from training.diagnosis.metrics import binary_ece, top_label_ece
from training.diagnosis.model import LOG_FEATURES, DiagnosisNet, guideline_knots
from training.diagnosis.train import NetConfig, fit_network, predict

MODEL_NAME = "diagnosis"
MODEL_VERSION = "1.0.0"
PARITY_TOLERANCE = 1e-4
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "diabetes"


def export_network(net: DiagnosisNet, path: Path) -> Path:
    """ONNX with inputs `features` and `mask` [batch, F] and output `probabilities` [batch, 3]."""
    n = len(FEATURES)
    example = (torch.zeros(2, n), torch.ones(2, n))
    axes = {"features": {0: "batch"}, "mask": {0: "batch"}, "probabilities": {0: "batch"}}
    return export_onnx(net.eval(), example, path, ["features", "mask"], ["probabilities"], axes)


def check_parity(net: DiagnosisNet, path: Path, tables: list[Table]) -> float:
    """Max |ONNX Runtime - PyTorch| over every row of every table; raises above the tolerance."""
    session = create_session(path, SessionOptions(providers=("cpu",)))
    names = [o.name for o in session.get_outputs()]
    worst = 0.0
    for t in tables:
        onnx_out = dict(zip(names, session.run(names, {"features": t.values, "mask": t.mask})))
        diffs = check_outputs({"probabilities": predict(net, t)}, onnx_out, f"{path}: ONNX vs PyTorch",
                              PARITY_TOLERANCE)  # OutputMismatchError (a ModelError) lists every mismatch
        worst = max(worst, diffs["probabilities"])
    return worst


def train_final(pima: Table, iraqi: Table, cfg: NetConfig, seed: int) -> tuple[DiagnosisNet, dict[str, float]]:
    """The shipped network on all rows; calibration on a held-out stratified fifth of each table."""
    fit_p, cal_p = split_calibration(pima, 0.2, seed)
    fit_i, cal_i = split_calibration(iraqi, 0.2, seed)
    net = fit_network([fit_p, fit_i], [cal_p, cal_i], cfg)
    calib = {
        "temperature": round(float(net.temperature), 4),
        "calibration_rows": len(cal_p) + len(cal_i),
        "pima_ece_before": binary_ece(cal_p.label, predict(net, cal_p, calibrated=False)[:, 2]),
        "pima_ece_after": binary_ece(cal_p.label, predict(net, cal_p)[:, 2]),
        "iraqi_ece_before": top_label_ece(cal_i.label, predict(net, cal_i, calibrated=False)),
        "iraqi_ece_after": top_label_ece(cal_i.label, predict(net, cal_i)),
    }
    return net, calib


def card_metrics(cv: CVResult) -> dict[str, Any]:
    return {
        "cross_validation": {
            "folds": cv.folds, "seed": cv.seed, "stratified": True,
            "note": "out-of-fold predictions pooled over all folds; temperature fitted on a split of each training fold",
            "methods": {name: {k: round(v, 4) for k, v in m.items()} for name, m in cv.metrics.items()},
            "temperatures": [round(t, 3) for t in cv.temperatures],
        },
    }


def run(data_dir: Path, out: Path, cfg: NetConfig, folds: int, seed: int) -> ModelCard:
    torch.set_num_threads(1)  # tiny networks: more threads only contend
    pima, iraqi = load_tables(data_dir)
    click.echo(f"pima: {json.dumps(pima.notes)}")
    click.echo(f"iraqi: {json.dumps(iraqi.notes)}")
    with click.progressbar(length=folds, label=f"{folds}-fold cross-validation", file=sys.stderr) as bar:
        cv = cross_validate(pima, iraqi, cfg, folds, seed, progress=bar.update)
    click.echo(cv.table())
    click.echo(f"cross-validation took {cv.seconds:.0f} s")
    net, calib = train_final(pima, iraqi, cfg, seed)
    export_network(net, out)
    worst = check_parity(net, out, [pima, iraqi])
    click.echo(f"exported {out}; ONNX Runtime vs PyTorch max |diff| {worst:.2e}; temperature {calib['temperature']}")
    metrics = card_metrics(cv)
    metrics["final_model_calibration"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in calib.items()}
    card = write_card(out, CardContent(
        name=MODEL_NAME, version=MODEL_VERSION, task="diabetes-classification",
        preprocess=None, quantization=None, classes=list(CLASSES),
        training_data={
            "pima": {"path": "diabetes/pima.csv", **pima.notes},
            "iraqi": {"path": "diabetes/iraqi.csv", **iraqi.notes},
            "split": "all rows; calibration on a stratified fifth of each table",
        },
        metrics=metrics,
        extra={
            "features": list(FEATURES),
            "inputs": {"features": "raw values in the units named by `features` (0 where missing)",
                       "mask": "1 where the value is present, 0 where missing"},
            "outputs": {"probabilities": [f"p_{c}" for c in CLASSES]},
            "log_features": list(LOG_FEATURES),
            "guideline_knots": [[f, k] for f, k in guideline_knots()],
            "training_config": dict(cfg.__dict__),
            "parity_max_abs_diff": worst,
            "limits": "Pima labels only diabetes vs not; prediabetes is learned from the Iraqi table alone. "
                      "Both tables are small and from specific populations; see docs/diagnosis.md.",
        },
    ))
    return card


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA,
              show_default=True, help="Folder with pima.csv and iraqi.csv.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=lambda: default_models_dir() / "diagnosis.onnx", show_default="models/diagnosis.onnx",
              help="ONNX file to write; the card goes beside it (.json).")
@click.option("--folds", type=click.IntRange(2, 20), default=5, show_default=True, help="Cross-validation folds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for folds and initialisation.")
@click.option("--epochs", type=click.IntRange(1), default=NetConfig.epochs, show_default=True)
@click.option("--members", type=click.IntRange(1), default=NetConfig.members, show_default=True,
              help="Ensemble size inside the network.")
def main(data_dir: Path, out: Path, folds: int, seed: int, epochs: int, members: int) -> None:
    """Cross-validate, train, export and card the diabetes diagnosis network."""
    from runtime.contracts.errors import SmearscopeError

    try:
        run(data_dir, out, NetConfig(epochs=epochs, members=members, seed=seed), folds, seed)
    except SmearscopeError as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    main()
