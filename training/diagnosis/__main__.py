"""`python -m training.diagnosis`: cross-validate the diagnosis network beside the
logistic-regression baseline and the guideline rule, and print the metrics table.

Exporting the model and writing its card is `python -m export.diagnosis` (which runs this same
cross-validation first).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import torch

from training.diagnosis.crossval import cross_validate
from training.diagnosis.data import load_tables
from training.diagnosis.train import NetConfig

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent.parent / "shared" / "data" / "diabetes"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA,
              show_default=True, help="Folder with pima.csv and iraqi.csv.")
@click.option("--folds", type=click.IntRange(2, 20), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=NetConfig.epochs, show_default=True)
@click.option("--members", type=click.IntRange(1), default=NetConfig.members, show_default=True,
              help="Ensemble size inside the network.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the metrics as JSON here.")
def main(data_dir: Path, folds: int, seed: int, epochs: int, members: int, json_out: Path | None) -> None:
    """Cross-validated metrics of the diabetes diagnosis network on the shared tables."""
    from runtime.contracts.errors import SmearscopeError

    torch.set_num_threads(1)
    try:
        pima, iraqi = load_tables(data_dir)
    except SmearscopeError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"pima: {json.dumps(pima.notes)}")
    click.echo(f"iraqi: {json.dumps(iraqi.notes)}")
    with click.progressbar(length=folds, label=f"{folds}-fold cross-validation", file=sys.stderr) as bar:
        result = cross_validate(pima, iraqi, NetConfig(epochs=epochs, members=members, seed=seed), folds, seed,
                                progress=bar.update)
    click.echo(result.table())
    click.echo(f"cross-validation took {result.seconds:.0f} s; fold temperatures "
               + ", ".join(f"{t:.2f}" for t in result.temperatures))
    if json_out:
        json_out.write_text(json.dumps({"folds": folds, "seed": seed, "metrics": result.metrics}, indent=2) + "\n")


if __name__ == "__main__":
    main()
