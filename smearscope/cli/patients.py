"""`smearscope patients`: the server's patient registry (history, trends) and sample orders."""

from __future__ import annotations

import click

_CONFIG = click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
                       help="server.yaml (its database is used).")
_DATABASE = click.option("--database", help="Database URL instead of --config (sqlite:///PATH or postgresql://...).")


def _open_store(config_path: str | None, database: str | None):
    from runtime.contracts.errors import ConfigError, DataError
    from server.config import ServerConfig
    from server.store import Store

    if not (database or config_path):
        raise ConfigError("give --config server.yaml or --database URL")
    url = database or ServerConfig.load(config_path).database_url()
    try:
        return Store(url)
    except _database_errors() as exc:  # unreachable or unreadable: one line, without the URL's password
        raise DataError(f"database: cannot open ({' '.join(str(exc).split())})") from None


def _database_errors() -> tuple[type[Exception], ...]:
    import sqlite3

    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


@click.group()
def patients() -> None:
    """Browse results by pseudonymous patient id, and send sample orders to devices."""


@patients.command("list")
@_CONFIG
@_DATABASE
def list_cmd(config_path: str | None, database: str | None) -> None:
    """List known patients, most recent first."""
    from server.registry import list_patients

    store = _open_store(config_path, database)
    rows = list_patients(store)
    store.close()
    if not rows:
        click.echo("no patients yet")
        return
    width = max(len("patient"), *(len(pid) for pid, *_ in rows))  # whole ids: `patients show` takes them
    click.echo(f"{'patient':<{width}} {'samples':>7} {'results':>7}  last result")
    for pid, samples, results, last in rows:
        click.echo(f"{pid:<{width}} {samples:>7} {results:>7}  {last}")


@patients.command("show")
@click.argument("patient_id")
@_CONFIG
@_DATABASE
def show(patient_id: str, config_path: str | None, database: str | None) -> None:
    """Show one patient's visits, FPG and HbA1c trends and any predicted cut-point crossing."""
    from runtime.contracts.errors import DataError
    from server.registry import format_history, patient_history

    store = _open_store(config_path, database)
    history = patient_history(store, patient_id)
    store.close()
    if history is None:
        raise DataError(f"no results for patient {patient_id!r}")
    click.echo(format_history(history))


@patients.command("order")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="server.yaml (its broker connection is used).")
@click.option("--site", required=True, help="The device's site (topic level).")
@click.option("--device", required=True, help="The device id that will capture the sample.")
@click.option("--sample-id", required=True, help="Pseudonymous sample id.")
@click.option("--patient-id", help="Pseudonymous patient id (keyed hash; never a name).")
@click.option("--lab", "labs", multiple=True, metavar="KEY=VALUE",
              help="Lab value with its unit in the key, e.g. fpg_mmol_l=6.4 or hba1c_pct=6.1 (repeatable).")
@click.option("--fields", type=click.IntRange(min=1), help="Captures to attach it to (default: until the next order).")
def order(config_path: str, site: str, device: str, sample_id: str, patient_id: str | None, labs: tuple[str, ...],
          fields: int | None) -> None:
    """Send a sample's context to a device; it attaches it to its next captures."""
    from runtime.contracts.errors import ConfigError
    from server.config import ServerConfig
    from server.orders import send_order_once

    lab_values: dict[str, float | str] = {}
    for item in labs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--lab {item!r}: expected KEY=VALUE")
        try:
            lab_values[key.strip()] = float(value)
        except ValueError:
            lab_values[key.strip()] = value.strip()
    sample: dict[str, object] = {"sample_id": sample_id, "labs": lab_values}
    if patient_id:
        sample["patient_id"] = patient_id
    order_id = send_order_once(ServerConfig.load(config_path), site, device, sample, fields)
    click.echo(f"order {order_id} sent to {site}/{device}")
