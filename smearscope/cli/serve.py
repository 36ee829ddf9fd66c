"""`smearscope serve`: the central subscriber (validate, store, commit, ack, receipt) and the web app."""

from __future__ import annotations

import logging
import signal
import threading

import click


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="server.yaml: broker (host, port, TLS files), database URL, share group, size limit, web.")
@click.option("--web/--no-web", "web", default=None,
              help="Serve the web app (default: the config's web.enabled, which defaults to on).")
@click.option("--mqtt/--no-mqtt", "mqtt", default=True, show_default=True,
              help="Run the MQTT subscriber; --no-mqtt serves only the web app over the database.")
@click.option("-v", "--verbose", is_flag=True, help="Log every message, not only warnings.")
def serve(config_path: str, web: bool | None, mqtt: bool, verbose: bool) -> None:
    """Receive device results over MQTT and store each exactly once; serve the web app.

    Every message is checked (UTF-8, JSON, result/1 or result/2 schema, size, topic device = payload device),
    stored with an idempotent upsert on result_id (SQLite, or PostgreSQL with a postgresql:// URL),
    committed, acknowledged, and answered with a receipt on the device's receipts topic. Rejected
    messages are kept with their reason. Start several servers with the same share_group to split
    the load (MQTT 5 shared subscription), or set `workers: K` to run K server processes here. The
    web app (inbox, review, patients, devices, upload; docs/web.md) listens on web.host:web.port,
    loopback by default. Stops on Ctrl-C or SIGTERM.
    """
    from runtime.contracts.errors import ConfigError
    from server.config import ServerConfig

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig.load(config_path)
    web_on = config.web.enabled if web is None else web
    if not (web_on or mqtt):
        raise ConfigError("nothing to serve: both --no-web and --no-mqtt")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    web_server = None
    if web_on:
        from server.web.runner import WebServer

        web_server = WebServer(config, watch_status=mqtt)
        web_server.start()
        click.echo(f"web app on {web_server.url}", err=True)
    try:
        if mqtt:
            if config.workers > 1:
                from server.workers import serve_workers

                click.echo(f"serving with {config.workers} workers in share group {config.share_group}; "
                           "Ctrl-C stops", err=True)
                restarts = serve_workers(config, stop, logging.INFO if verbose else logging.WARNING)
                click.echo(f"stopped ({restarts} worker restarts)", err=True)
                return
            from server.service import ResultServer

            server = ResultServer(config)
            click.echo(f"serving {server.subscription} and {server.media_subscription} -> {server.store.kind} database,"
                       f" images in {config.images_path()}; Ctrl-C stops", err=True)
            server.run_forever(stop)
            click.echo(f"stopped after {server.processed} messages", err=True)
        else:
            click.echo("web app only (no MQTT); Ctrl-C stops", err=True)
            stop.wait()
    finally:
        if web_server:
            web_server.stop()
