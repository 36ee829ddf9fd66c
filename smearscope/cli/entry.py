"""Running a click command as a console script: user errors become one line, never a traceback.

Shared by `smearscope` and `edge-bench` so both answer bad input the same way.
"""

from __future__ import annotations

import sys

import click

from runtime.contracts.errors import SmearscopeError

# Packages of the [train] extra: a device install lacks them on purpose.
WORKSTATION_PACKAGES = frozenset({"torch", "onnx", "onnxsim"})


def run_console_script(command: click.Command) -> None:
    """Invoke `command` with sys.argv; exit 2 with one line for SmearscopeError or a missing extra."""
    try:
        command.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SmearscopeError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]  # torch.utils.data -> torch
        if package not in WORKSTATION_PACKAGES:
            raise
        click.secho(
            f"error: this command needs {package}, which a device install leaves out; "
            "on a workstation: pip install torch==2.13.0 && pip install 'smearscope[train]'",
            fg="red",
            err=True,
        )
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
