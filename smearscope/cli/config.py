"""`smearscope config check FILE`: validate a device config before deploying it."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def config() -> None:
    """Check and show device configuration files (YAML)."""


@config.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--show", is_flag=True, help="Also print the effective config, defaults filled in.")
def check(file: Path, show: bool) -> None:
    """Validate FILE: unknown keys and bad values are reported with their key path.

    Exits 0 when the file is valid, 2 otherwise. Checks the file only: the model, camera and
    controller are opened by `smearscope run`.
    """
    import yaml

    from runtime.contracts.config import config_to_dict, load_config
    from runtime.contracts.errors import ConfigError

    try:
        cfg = load_config(file)
    except ConfigError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        raise SystemExit(2) from None
    click.echo(f"{file}: valid (device {cfg.device_id}, camera {cfg.camera.type}, trigger {cfg.trigger.type}, "
               f"publisher {cfg.publisher.type})")
    if show:
        click.echo(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True).rstrip())
