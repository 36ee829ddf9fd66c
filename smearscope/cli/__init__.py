"""The `smearscope` command group.

Subcommands live in their own modules and are imported only when invoked, so that device
commands (`run`, `analyze`, `demo`) never import torch or other workstation-only packages.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from smearscope import __version__
from smearscope.cli.entry import as_user_error, guard_command

# name -> "module:attribute"; each module imports only click at import time.
SUBCOMMANDS: dict[str, str] = {
    "demo": "smearscope.cli.demo:demo",
    "run": "smearscope.cli.run:run",
    "analyze": "smearscope.cli.analyze:analyze",
    "config": "smearscope.cli.config:config",
    "train": "smearscope.cli.train:train",
    "export": "smearscope.cli.export:export",
    "diagnose": "smearscope.cli.diagnose:diagnose",
    "serve": "smearscope.cli.serve:serve",
    "patients": "smearscope.cli.patients:patients",
    "users": "smearscope.cli.users:users",
    "bridge": "smearscope.cli.bridge:bridge",
    "evaluate": "smearscope.cli.evaluate:evaluate",
}


class LazyGroup(click.Group):
    """A click group that imports each subcommand's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in SUBCOMMANDS if _module_exists(SUBCOMMANDS[name]))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None or not _module_exists(target):
            return None
        module_name, attr = target.split(":")
        return guard_command(getattr(importlib.import_module(module_name), attr))

    def invoke(self, ctx: click.Context):
        """Every failure of a subcommand ends as one line with exit 2 (usage/config) or 1 (data)."""
        try:
            return super().invoke(ctx)
        except Exception as exc:  # noqa: BLE001 - turned into one line, or re-raised unchanged
            error = as_user_error(exc)
            if error is None:
                raise
            raise error from None


def _module_exists(target: str) -> bool:
    module_name = target.split(":")[0]
    return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="smearscope")
def cli() -> None:
    """smearscope: blood-smear analysis with diabetes decision support on an edge device.

    Start with `smearscope demo`: it runs the whole path (capture, quality gate,
    segmentation, counting, diagnosis, delivery) on built-in defaults.
    """


guard_command(cli)


def main() -> None:
    """Console-script entry point."""
    from smearscope.cli.entry import run_console_script

    run_console_script(cli)
