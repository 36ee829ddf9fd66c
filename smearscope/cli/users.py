"""`smearscope users`: web app accounts (viewer, reviewer, admin) in the server's database."""

from __future__ import annotations

import click

from smearscope.cli.patients import _CONFIG, _DATABASE  # one definition of the server-database options


def _accounts(config_path: str | None, database: str | None):
    from smearscope.cli.patients import _open_store
    from server.web.auth import Accounts
    from server.web.db import Database

    return Accounts(Database(_open_store(config_path, database)))


@click.group()
def users() -> None:
    """Add, list and disable the web app's users."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "reviewer", "admin"]), required=True,
              help="viewer: reads everything; reviewer: also reviews, signs off and uploads; admin: also sees every upload.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="At least 10 characters (asked for when not given; SMEARSCOPE_PASSWORD also works).",
              envvar="SMEARSCOPE_PASSWORD")
@_CONFIG
@_DATABASE
def add(name: str, role: str, password: str, config_path: str | None, database: str | None) -> None:
    """Add user NAME with a role (the password is stored as an argon2id hash)."""
    accounts = _accounts(config_path, database)
    try:
        accounts.add(name, password, role)
    finally:
        accounts.db.close()
    click.echo(f"user {name} added ({role})")


@users.command("list")
@_CONFIG
@_DATABASE
def list_cmd(config_path: str | None, database: str | None) -> None:
    """List users with their role and whether they are disabled."""
    from datetime import datetime, timezone

    accounts = _accounts(config_path, database)
    rows = accounts.list()
    accounts.db.close()
    if not rows:
        click.echo("no users yet: add one with `smearscope users add NAME --role admin`")
        return
    click.echo(f"{'user':<24} {'role':<9} {'state':<9} created")
    for user, created in rows:
        when = datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{user.name:<24} {user.role:<9} {'disabled' if user.disabled else 'active':<9} {when}")


@users.command("disable")
@click.argument("name")
@_CONFIG
@_DATABASE
def disable(name: str, config_path: str | None, database: str | None) -> None:
    """Disable user NAME: its sign-ins are refused and its open sessions end."""
    accounts = _accounts(config_path, database)
    try:
        accounts.disable(name)
    finally:
        accounts.db.close()
    click.echo(f"user {name} disabled")
