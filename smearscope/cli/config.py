"""`smearscope config`: check a device config before deploying it, print the shipped examples and
the JSON Schema (for editors)."""

from __future__ import annotations

import json
from pathlib import Path

import click

EXAMPLE_CHOICES = ("default", "pi", "jetson")  # runtime.device.examples.EXAMPLE_NAMES (imported lazily)


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    raise SystemExit(2)


@click.group()
def config() -> None:
    """Check and show device configuration files (YAML)."""


@config.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--show", is_flag=True, help="Also print the effective config, defaults filled in.")
@click.option("--server", "server", is_flag=True, help="FILE is a server config (server.yaml), not a device config.")
def check(file: Path, show: bool, server: bool) -> None:
    """Validate FILE: unknown keys and bad values (out of range, wrong type) are reported with their
    key path, in one line.

    Exits 0 when the file is valid, 2 otherwise. Checks the file only: the model, camera and
    controller are opened by `smearscope run`.
    """
    import yaml

    from runtime.contracts.errors import ConfigError

    try:
        if server:
            from server.config import ServerConfig

            cfg = ServerConfig.load(file)
            summary = f"{file}: valid (server, broker {cfg.broker.host}:{cfg.broker.port}, site {cfg.site})"
        else:
            from runtime.contracts.config import load_config

            cfg = load_config(file)
            summary = (f"{file}: valid (device {cfg.device_id}, camera {cfg.camera.type}, "
                       f"trigger {cfg.trigger.type}, publisher {cfg.publisher.type})")
    except ConfigError as exc:
        _fail(str(exc))
    click.echo(summary)
    if show:
        click.echo(yaml.safe_dump(cfg.to_plain(), sort_keys=False, allow_unicode=True).rstrip())


@config.command()
@click.option("--server", "server", is_flag=True, help="The server config's schema instead of the device config's.")
def schema(server: bool) -> None:
    """Print the JSON Schema of the device config (or, with --server, of server.yaml).

    Editors use it to complete keys and flag mistakes as you type, e.g. with the YAML language
    server: `# yaml-language-server: $schema=device.schema.json` on the first line.
    """
    if server:
        from server.config import server_config_schema

        document = server_config_schema()
    else:
        from runtime.contracts.config import config_schema

        document = config_schema()
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


@config.command()
@click.argument("name", type=click.Choice(EXAMPLE_CHOICES))
def example(name: str) -> None:
    """Print a shipped example config: default (every key with its default), pi (Raspberry Pi:
    libcamera, GPIO button, MQTT with TLS) or jetson (CSI camera, USB controller, TensorRT).

    Start a deployment with `smearscope config example pi > device.yaml`, then edit it.
    """
    from runtime.device.examples import example_path

    click.echo(example_path(name).read_text(encoding="utf-8"), nl=False)
