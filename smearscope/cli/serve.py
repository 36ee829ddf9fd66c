"""`smearscope serve`: the central subscriber (validate, store, commit, ack, receipt)."""

from __future__ import annotations

import logging
import signal
import threading

import click


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="server.yaml: broker (host, port, TLS files), database URL, share group, size limit.")
@click.option("-v", "--verbose", is_flag=True, help="Log every message, not only warnings.")
def serve(config_path: str, verbose: bool) -> None:
    """Receive device results over MQTT and store each exactly once.

    Every message is checked (UTF-8, JSON, result/1 schema, size, topic device = payload device),
    stored with an idempotent upsert on result_id (SQLite, or PostgreSQL with a postgresql:// URL),
    committed, acknowledged, and answered with a receipt on the device's receipts topic. Rejected
    messages are kept with their reason. Start several servers with the same share_group to split
    the load (MQTT 5 shared subscription), or set `workers: K` to run K server processes here.
    Stops on Ctrl-C or SIGTERM.
    """
    from server.config import ServerConfig
    from server.service import ResultServer

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig.load(config_path)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if config.workers > 1:
        from server.workers import serve_workers

        click.echo(f"serving with {config.workers} workers in share group {config.share_group}; Ctrl-C stops",
                   err=True)
        restarts = serve_workers(config, stop, logging.INFO if verbose else logging.WARNING)
        click.echo(f"stopped ({restarts} worker restarts)", err=True)
        return
    server = ResultServer(config)
    click.echo(f"serving {server.subscription} -> {server.store.kind} database; Ctrl-C stops", err=True)
    server.run_forever(stop)
    click.echo(f"stopped after {server.processed} messages", err=True)
