"""Running a click command: user errors become one line, never a traceback.

Shared by `smearscope` and `edge-bench` so both answer bad input the same way. Exit codes: 2 for
usage and configuration (a bad option, config file, model file or calibration), 1 for data (an
image, a table, a lab value, a file that cannot be read or written). Anything else that escapes
a command is still one line (with SMEARSCOPE_DEBUG=1 the traceback is shown instead).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import click

from runtime.contracts.errors import ConfigError, ModelError, SmearscopeError

# Packages of the [train] extra: a device install lacks them on purpose.
WORKSTATION_PACKAGES = frozenset({"torch", "onnx", "onnxsim"})
USAGE_EXIT, DATA_EXIT = 2, 1


class UserError(click.ClickException):
    """A failure a person can act on: one line `error: ...` and an exit code that says which kind."""

    def __init__(self, message: str, exit_code: int = DATA_EXIT) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.secho(f"error: {self.format_message()}", fg="red", err=True, file=file)


def exit_code_for(exc: BaseException) -> int:
    """2 for usage/config/model problems, 1 for data problems."""
    return USAGE_EXIT if isinstance(exc, (ConfigError, ModelError)) else DATA_EXIT


def as_user_error(exc: BaseException) -> click.ClickException | None:
    """The one-line form of an exception escaping a command, or None to let it propagate."""
    if isinstance(exc, (click.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                        KeyboardInterrupt, SystemExit)):
        return None
    if isinstance(exc, SmearscopeError):
        return UserError(_one_line(str(exc)), exit_code_for(exc))
    if isinstance(exc, ModuleNotFoundError):
        package = (exc.name or "").split(".")[0]  # torch.utils.data -> torch
        if package in WORKSTATION_PACKAGES:
            return UserError(f"this command needs {package}, which a device install leaves out; on a workstation: "
                             "pip install torch==2.13.0 && pip install 'smearscope[train]'", USAGE_EXIT)
    if os.environ.get("SMEARSCOPE_DEBUG"):
        return None
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return UserError(_one_line(f"{where}{exc.strerror or exc}"), DATA_EXIT)
    if isinstance(exc, MemoryError):
        return UserError("out of memory (the input is too large for this device)", DATA_EXIT)
    return UserError(_one_line(f"internal error ({type(exc).__name__}: {exc}); run with SMEARSCOPE_DEBUG=1 "
                               "for the traceback"), DATA_EXIT)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def check_repeated_options(command: click.Command, args: Sequence[str]) -> None:
    """A single-valued option given twice is an error, not 'the last one wins' (a repeated --fpg
    would otherwise silently drop a value). For a group, only the options before its subcommand."""
    by_token: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for token in (*param.opts, *param.secondary_opts):
                by_token[token] = param
    seen: dict[str, str] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            return
        name, eq, _value = token.partition("=")
        option = by_token.get(name) if token.startswith("-") else None
        if option is None:
            if isinstance(command, click.Group) and not token.startswith("-"):
                return  # the subcommand: its options are checked when it parses
            i += 1
            continue
        shown = token if eq or option.is_flag or i + 1 >= len(args) else f"{token} {args[i + 1]}"
        if not (option.multiple or option.count or option.is_eager):
            key = option.name or name
            if key in seen:
                raise click.UsageError(f"option {name} is given twice ({seen[key]!r} and {shown!r}); give it once")
            seen[key] = shown
        if not eq and not option.is_flag:
            i += option.nargs
        i += 1


def guard_command(command: click.Command) -> click.Command:
    """Install the repeated-option check on a command and every subcommand below it (once)."""
    if getattr(command, "_repeat_guard", False):
        return command
    original = command.parse_args

    def parse_args(ctx: click.Context, args: list[str]) -> list[str]:
        check_repeated_options(command, args)
        return original(ctx, args)

    command.parse_args = parse_args  # type: ignore[method-assign]
    command._repeat_guard = True  # type: ignore[attr-defined]
    for sub in getattr(command, "commands", {}).values():
        guard_command(sub)
    return command


def run_console_script(command: click.Command) -> None:
    """Invoke `command` with sys.argv; every failure ends as one line and an exit code."""
    guard_command(command)
    try:
        command.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last fence before a person sees a traceback
        error = as_user_error(exc)
        if error is None:
            raise
        error.show()
        sys.exit(error.exit_code)
